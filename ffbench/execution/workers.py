"""The claim loop of a worker: claim a row from the shared store, execute it (``execute.py``), repeat.

One loop serves every deployment: ``ffbench run SUITE`` (one worker in the launcher's process),
``ffbench run SUITE --workers N`` (N local worker processes, each on its own device, round-robin over
``cuda:i`` when there are GPUs), and ``ffbench worker SUITE --store URL --optuna-storage URL
--tracking-uri URI`` started on other machines against the same storage and tracking server.

The store decides everything, so workers may start and die at any moment:
* what is left is what the store does not hold as finished; a worker claims a pending row, or a running
  row whose heartbeat is older than the lease (its worker died), with one atomic conditional UPDATE, so a
  row is executed by one worker at a time, and a result is recorded only by the worker that holds the
  row (a worker that lost its lease abandons its run at the next epoch and its late result is dropped);
* rows are taken cell by cell, a cell's tuning slots before its evaluation runs; a tuned cell's evaluation
  runs are inserted once its slots are finished (``selection.py``; see ``tuning.py`` for the coordination
  of tuning and evaluation), and meanwhile idle workers take the next cell's slots;
* a worker with nothing to claim waits while other workers hold rows (they may die; their rows come back
  when their lease runs out) or tuning is still open, and exits when every run of the suite is finished.
Resume is the same loop: running a suite again executes only what is missing, and a run whose worker
died is redone once its lease has expired, or at once when that worker ran on this host and its process
no longer exists (a claim records host and PID). A failure inside a run (NaN, divergence, an exception in a
method) is a recorded outcome with its message, never a crash of the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any

from ffbench.core.config import RunConfig
from ffbench.execution.execute import Env, batch_problem, execute_row, run_batch, tell_unbatched
from ffbench.execution.selection import register_evaluation
from ffbench.plan.design import TUNING, Design
from ffbench.plan.suite import Suite
from ffbench.record.store import FINISHED, PENDING, RUNNING, RunRow, Store, is_stale, process_exists

logger = logging.getLogger(__name__)


def expected_ids(design: Design) -> list[str]:
    """Every row the suite ends with, in the order workers take them: cell by cell, a cell's tuning slots and
    then its evaluation runs (so cells complete early; a worker that finds a cell's slots all taken moves on
    to the next cell instead of waiting)."""
    by_cell: dict[str, list[str]] = {c.cell_id: [] for c in design.cells}
    for r in design.trials + design.runs:
        by_cell[r.cell.cell_id].append(r.run_id)
    return [rid for ids in by_cell.values() for rid in ids]


def progress(store: Store, suite: Suite, design: Design) -> dict[str, int]:
    ids = set(expected_ids(design))
    counts: dict[str, int] = {}
    for s in store.states(suite.name, suite.version):
        if s["run_id"] in ids:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
    counts["total"] = len(ids)
    counts["finished"] = sum(counts.get(s, 0) for s in FINISHED)
    return counts


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} runs [{elapsed}<{remaining}]{postfix}"


def progress_bar(total: int, initial: int = 0, desc: str = ""):
    """The suite's progress bar on stderr: runs, advanced epoch by epoch (so its ETA follows the epochs). In a
    log that is not a terminal, plain lines instead (``ProgressLines``): no carriage-return fragments."""
    if not sys.stderr.isatty():
        return ProgressLines(total, initial, desc)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, bar_format=BAR_FORMAT)


class ProgressLines:
    """The progress bar's interface for a log: one plain line when a run starts or finishes (not per epoch)."""

    def __init__(self, total: int, initial: int = 0, desc: str = ""):
        self.total, self.n, self.desc, self.postfix = total, initial, desc, ""
        self._said: tuple = ()

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s.split(" · epoch ")[0]  # the run in hand; its epochs are not worth a line each
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        done = int(self.n)
        if (done, self.postfix) != self._said:
            self._said = (done, self.postfix)
            print(
                f"{self.desc}: {done}/{self.total} runs finished" + (f"; now {self.postfix}" if self.postfix else ""),
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.postfix = ""
        self.refresh()


class Shown:
    """What the bar shows while a worker works: the finished runs plus the share of the run in hand that is
    done, and that run's cell (method / dataset / backbone and axis levels), seed or trial, and epoch."""

    def __init__(self, bar, env: Env):
        self.bar, self.cells, self.finished, self.what = bar, env.cells, 0, ""

    def runs(self, finished: int) -> None:
        self.finished = finished
        self.bar.n = finished
        self.bar.refresh()

    def start(self, row: RunRow) -> None:
        self.what = describe(row, self.cells)
        self.bar.set_postfix_str(self.what)

    def epoch(self, row: RunRow, done: int, total: int) -> None:
        self.bar.n = self.finished + min(done / max(total, 1), 1.0)
        self.bar.set_postfix_str(f"{self.what} · epoch {done}/{total}", refresh=False)
        self.bar.refresh()


def release_dead_local(store: Store, suite: Suite, states) -> int:
    """Give back the rows of ``states`` held by a process of this host that no longer exists."""
    host, me = socket.gethostname(), os.getpid()
    if not any(
        s["status"] == RUNNING
        and s.get("host") == host
        and s.get("pid") not in (None, me)
        and not process_exists(s["pid"])
        for s in states
    ):
        return 0
    gone = store.release_dead(suite.name, host)
    if gone:
        logger.info(f"gave back {len(gone)} run(s) held by a process on this host that no longer exists")
    return len(gone)


def work(env: Env, bar=None, wait: bool = True, max_runs: int | None = None) -> int:
    """Claim and execute rows until the suite is finished (or nothing is claimable, if not ``wait``).
    Interrupted (Ctrl-C, SIGTERM), it gives back whatever this worker holds before it re-raises."""
    try:
        return _work(env, bar, wait, max_runs)
    except KeyboardInterrupt:
        try:
            env.store.release_worker(env.worker)  # a claim taken just before the signal, outside a run
        except Exception:
            pass
        raise


def _work(env: Env, bar, wait: bool, max_runs: int | None) -> int:
    suite, design, store = env.suite, env.design, env.store
    order = {rid: i for i, rid in enumerate(expected_ids(design))}
    tuned = [c for c in design.cells if c.tuning]
    eval_ids = {c.cell_id: [r.run_id for r in design.runs if r.cell.cell_id == c.cell_id] for c in tuned}
    slot_ids = {c.cell_id: [r.run_id for r in design.trials if r.cell.cell_id == c.cell_id] for c in tuned}
    ready: set[str] = set()
    executed = 0
    warned = told = False
    shown = Shown(bar, env) if bar is not None else None
    if shown is not None:
        env.progress = shown.epoch
    while max_runs is None or executed < max_runs:
        states = {s["run_id"]: s for s in store.states(suite.name, suite.version) if s["run_id"] in order}
        if not states and not warned and wait:
            logger.warning(
                f"worker {env.worker}: the store {store.url} holds no runs of {suite.name} version {suite.version} "
                f"yet; waiting for the launcher to initialise it (or start this worker without --no-init)"
            )
            warned = True
        changed = False
        for c in tuned:
            if c.cell_id in ready:
                continue
            if all(r in states for r in eval_ids[c.cell_id]):
                ready.add(c.cell_id)
            elif all(r in states and states[r]["status"] in FINISHED for r in slot_ids[c.cell_id]):
                changed |= register_evaluation(store, suite, c, env.storage()) > 0
                ready.add(c.cell_id)
        if changed or release_dead_local(store, suite, states.values()):
            continue
        finished = sum(s["status"] in FINISHED for s in states.values())
        if shown is not None:
            shown.runs(finished)
        now = store.now()
        candidates = sorted(
            (
                s
                for s in states.values()
                if s["status"] == PENDING or (s["status"] == RUNNING and is_stale(s["heartbeat"], now, env.lease_s))
            ),
            key=lambda s: order[s["run_id"]],
        )
        took = False
        for s in candidates:
            if store.claim(s["run_id"], env.worker, env.lease_s):
                row = store.rows(run_id=s["run_id"])[0]
                room = None if max_runs is None else max_runs - executed
                rows = [row, *claim_seeds(env, row, candidates, room)]
                if shown is not None:
                    shown.start(row)
                done = run_batch(env, rows) if len(rows) > 1 else [execute_row(env, row)]
                executed += sum(status is not None for status in done)
                took = True
                break
        if took:
            continue
        if finished == len(order) or not wait:
            return executed
        if not told:
            told = tell_waiting(env, [s for s in states.values() if s["status"] == RUNNING], now)
        time.sleep(env.poll_s)
    return executed


def tell_waiting(env: Env, held: list[dict[str, Any]], now: float) -> bool:
    """Say once what this worker waits for: the runs other processes hold, and when the first is taken over
    if its holder stops beating. Returns whether it said it."""
    if not held:
        return False
    ahead = [s for s in held if (s["heartbeat"] or 0) > now]
    first = min((s["heartbeat"] or now) for s in held) + env.lease_s
    holders = sorted({s["worker"] or "?" for s in held})
    skew = (
        f"; {len(ahead)} heartbeat(s) are ahead of this clock (clock skew; one more than the lease ahead "
        f"counts as stale)"
        if ahead
        else ""
    )
    logger.info(
        f"worker {env.worker}: waiting for {len(held)} run(s) held by {', '.join(holders[:3])}"
        f"{' and others' if len(holders) > 3 else ''} to finish; a run whose holder stops beating for the "
        f"{env.lease_s:g} s lease is taken over (the first at {time.strftime('%H:%M:%S', time.localtime(first))}, "
        f"if its holder has stopped by then){skew}"
    )
    return True


def claim_seeds(env: Env, row: RunRow, candidates: list[dict[str, Any]], room: int | None) -> list[RunRow]:
    """The other pending evaluation runs of ``row``'s cell, claimed with it so that its seeds can train as
    one batch (none for a tuning trial, or where ``batch_problem`` keeps them apart: said once per cell)."""
    if row.role == TUNING or env.suite.batch_seeds is False:
        return []
    siblings = [
        s for s in candidates if s["run_id"] != row.run_id and s["cell_id"] == row.cell_id and s["role"] != TUNING
    ]
    why = batch_problem(env, [RunConfig.from_dict(row.config)]) if siblings else None
    if why:
        tell_unbatched(env, row, why)
        return []
    out = []
    for s in siblings:
        if room is not None and len(out) + 1 >= room:
            break
        if env.store.claim(s["run_id"], env.worker, env.lease_s):
            out.append(env.store.rows(run_id=s["run_id"])[0])
    return out


def describe(row: RunRow, cells: dict[str, Any] | None = None) -> str:
    """'method/dataset/backbone/axis=level · seed N' (or '· trial K') of a store row."""
    cell = (cells or {}).get(row.cell_id)
    f = row.factors
    label = (
        cell.label
        if cell is not None
        else "/".join(
            str(v) if k in ("method", "dataset", "backbone") else f"{k}={v}" for k, v in f.items() if v is not None
        )
    )
    what = f"trial {row.trial}" if row.role == TUNING else f"seed {row.seed}"
    return f"{label} · {what}"
