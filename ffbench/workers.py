"""Workers: claim runs from the shared store, execute them, record them, mirror them to MLflow.

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
  runs are inserted once its slots are finished (see ``tuning.py`` for the coordination of tuning and
  evaluation), and meanwhile idle workers take the next cell's slots;
* a worker with nothing to claim waits while other workers hold rows (they may die; their rows come back
  when their lease runs out) or tuning is still open, and exits when every run of the suite is finished.
Resume is the same loop: running a suite again executes only what is missing, and a run whose worker
died is redone once its lease has expired. A failure inside a run (NaN, divergence, an exception in a
method) is a recorded outcome with its message, never a crash of the worker.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ffbench.config import RunConfig
from ffbench.design import EVALUATION, TUNING, Cell, Design
from ffbench.store import DONE, FAILED, FINISHED, PENDING, PRUNED, RUNNING, Store, worker_name
from ffbench.suite import Suite

LEASE_S = 600.0  # a run whose heartbeat is older than this is considered abandoned
POLL_S = 1.0  # how often an idle worker looks again while others hold runs (one light query)


class LeaseLost(RuntimeError):
    """Another worker took the run over (our heartbeat was late): stop and drop the result."""


def heartbeat_interval(lease_s: float) -> float:
    return max(0.05, min(30.0, lease_s / 4))


class Heartbeat:
    """Refresh a claimed row's lease in the background while it runs; notice when it was taken over."""

    def __init__(self, store: Store, run_id: str, worker: str, interval: float):
        import threading

        self.store, self.run_id, self.worker, self.interval = store, run_id, worker, interval
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.wait(self.interval):
            try:
                if not self.store.heartbeat(self.run_id, self.worker):
                    self.lost = True
                    return
            except Exception:  # a transient database error: try again at the next beat
                pass

    def check(self, *_: Any) -> None:
        """An ``on_epoch`` callback: stop the run if another worker holds it now."""
        if self.lost:
            raise LeaseLost(f"{self.run_id}: lease lost to another worker")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


@dataclass
class Env:
    """What a worker works with."""

    suite: Suite
    design: Design
    store: Store
    worker: str
    device: str = "auto"
    tracker: Any = None
    optuna_url: str | None = None
    lease_s: float = LEASE_S
    poll_s: float = POLL_S
    cells: dict[str, Cell] = field(default_factory=dict)
    _storage: Any = None

    def __post_init__(self):
        self.cells = {c.cell_id: c for c in self.design.cells}

    def storage(self):
        if self._storage is None:
            from ffbench.tuning import open_storage

            if not self.optuna_url:
                raise RuntimeError("this suite tunes, but no Optuna storage was given")
            self._storage = open_storage(self.optuna_url)
        return self._storage


# ---------------------------------------------------------------- set-up (the launcher's job)
def init_suite(suite: Suite, design: Design, store: Store, tracker=None, optuna_url: str | None = None) -> int:
    """Make the store, the Optuna studies and the MLflow parents ready. Idempotent; returns new rows."""
    new = store.add_runs(r.store_row(suite) for r in design.initial_runs())
    if any(c.tuning for c in design.cells):
        from ffbench.tuning import ensure_studies, open_storage

        ensure_studies(open_storage(optuna_url), suite, design)
    if tracker is not None:  # every parent exists before any worker starts (no races between workers)
        for cell in design.cells:
            tracker.parent_run(cell.cell_id, cell.factors, cell.config.to_dict(), suite.version)
    return new


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


# ---------------------------------------------------------------- the loop
def work(env: Env, bar=None, wait: bool = True, max_runs: int | None = None) -> int:
    """Claim and execute rows until the suite is finished (or nothing is claimable, if not ``wait``)."""
    from ffbench.tuning import register_evaluation

    suite, design, store = env.suite, env.design, env.store
    order = {rid: i for i, rid in enumerate(expected_ids(design))}
    tuned = [c for c in design.cells if c.tuning]
    eval_ids = {c.cell_id: [r.run_id for r in design.runs if r.cell.cell_id == c.cell_id] for c in tuned}
    slot_ids = {c.cell_id: [r.run_id for r in design.trials if r.cell.cell_id == c.cell_id] for c in tuned}
    ready: set[str] = set()
    executed = 0
    warned = False
    while max_runs is None or executed < max_runs:
        states = {s["run_id"]: s for s in store.states(suite.name, suite.version) if s["run_id"] in order}
        if not states and not warned and wait:
            print(f"worker {env.worker}: the store {store.url} holds no runs of {suite.name} version {suite.version} "
                  f"yet; waiting for the launcher to initialise it (or start this worker without --no-init)",
                  file=sys.stderr)
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
        if changed:
            continue
        finished = sum(s["status"] in FINISHED for s in states.values())
        if bar is not None:
            bar.n = finished
            bar.refresh()
        now = store.now()
        candidates = sorted((s for s in states.values() if s["status"] == PENDING or
                             (s["status"] == RUNNING and (s["heartbeat"] or 0) < now - env.lease_s)),
                            key=lambda s: order[s["run_id"]])
        took = False
        for s in candidates:
            if store.claim(s["run_id"], env.worker, env.lease_s):
                row = store.rows(run_id=s["run_id"])[0]
                if bar is not None:
                    bar.set_postfix_str(_describe(row))
                if execute_row(env, row) is not None:
                    executed += 1
                took = True
                break
        if took:
            continue
        if finished == len(order) or not wait:
            return executed
        time.sleep(env.poll_s)
    return executed


def _describe(row: dict[str, Any]) -> str:
    f = row["factors"]
    what = f"trial {row['trial']}" if row["role"] == TUNING else f"seed {row['seed']}"
    return f"{f['method']} {f['backbone']} {what}"


def execute_row(env: Env, row: dict[str, Any]) -> str | None:
    """Run a row this worker has claimed; return its status, or None if the lease was lost."""
    if row["role"] == TUNING:
        return run_trial(env, row)
    return run_evaluation(env, row)


def _mirror(env: Env, run_id: str) -> None:
    if env.tracker is None:
        return
    try:
        row = env.store.rows(run_id=run_id)[0]
        env.store.set_mlflow_run(run_id, env.tracker.log_run(row))
    except Exception as exc:  # the store is the source of truth; a tracking hiccup must not lose a run
        print(f"warning: MLflow mirror of {run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"


def run_evaluation(env: Env, row: dict[str, Any]) -> str | None:
    from ffbench.runner import manifest
    from ffbench.seeds import Streams
    from ffbench.train import fit, resolve_device

    store, worker, run_id = env.store, env.worker, row["run_id"]
    config = RunConfig.from_dict(row["config"])
    dev = resolve_device(env.device)
    info = manifest(str(dev))
    info["streams"] = Streams(config.seed).as_dict()
    if row.get("params"):
        info["tuned_params"] = row["params"]
    try:
        with Heartbeat(store, run_id, worker, heartbeat_interval(env.lease_s)) as hb:
            result = fit(config, dev, on_epoch=hb.check)
        status, error = result.status, result.error
        payload = dict(metrics=result.metrics, curves=result.curves, compute=result.compute)
    except LeaseLost:
        return None
    except KeyboardInterrupt:
        store.release(run_id, worker)
        raise
    except Exception as exc:  # a method that raises is an outcome to report, not a crash of the suite
        status, error = FAILED, _failure(exc)
        payload = dict(metrics={}, curves=[], compute={})
    if not store.finish(run_id, worker, status, manifest=info, error=error, **payload):
        return None  # our lease expired and someone else took the run over; their result counts
    _mirror(env, run_id)
    return status


def run_trial(env: Env, row: dict[str, Any]) -> str | None:
    """One tuning slot: ask the cell's study for a trial, train it on every tuning seed, record, tell."""
    from optuna.trial import TrialState

    from ffbench import tuning
    from ffbench.runner import manifest
    from ffbench.train import fit, resolve_device

    store, worker, run_id = env.store, env.worker, row["run_id"]
    cell = env.cells[row["cell_id"]]
    spec = cell.tuning
    storage = env.storage()
    study = tuning.load_study(storage, env.suite, cell, row["trial"])
    tuning.fail_orphan(study, row.get("optuna_trial"))  # the trial of a worker that died holding this slot
    trial = study.ask(tuning.distributions(spec["space"]))
    trial.set_user_attr("ffbench.slot", row["trial"])
    trial.set_user_attr("ffbench.run_id", run_id)
    trial.set_user_attr("ffbench.worker", worker)
    params = dict(trial.params)
    seeds = list(spec["seeds"])
    base = replace(tuning.apply_params(RunConfig.from_dict(row["config"]), params), seed=seeds[0])
    if not store.set_trial(run_id, worker, trial.number, params, base.to_dict()):
        study.tell(trial, state=TrialState.FAIL)
        return None
    dev = resolve_device(env.device)
    info = manifest(str(dev))
    info.update({"optuna_trial": trial.number, "study": tuning.study_name(env.suite, cell), "tuning_seeds": seeds})
    curves: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    compute: dict[str, Any] = {}
    error = None
    values: list[float] = []
    reporter = None
    try:
        with Heartbeat(store, run_id, worker, heartbeat_interval(env.lease_s)) as hb:
            status = DONE
            for i, seed in enumerate(seeds):
                reporter = tuning.Reporter(trial, base.epochs, i, lost=hb.check)
                result = fit(replace(base, seed=seed), dev, on_epoch=reporter)
                curves += [_no_test(dict(r, seed=seed)) for r in result.curves]
                compute = result.compute
                if result.status != DONE:
                    status, error = result.status, f"tuning seed {seed}: {result.error}"
                    break
                values.append(result.metrics[tuning.METRIC])
                metrics[f"val_acc.seed{seed}"] = result.metrics[tuning.METRIC]
                metrics[f"best_epoch.seed{seed}"] = result.metrics.get("best_epoch")
            if status == DONE:
                metrics[tuning.METRIC] = sum(values) / len(values)
    except tuning.Pruned as p:
        status, error = PRUNED, str(p)
        curves += [_no_test(dict(r, seed=seeds[len(values)])) for r in (reporter.rows if reporter else [])]
        seen = values + [r[tuning.METRIC] for r in (reporter.rows if reporter else [])]
        metrics.update({tuning.METRIC: max(seen) if seen else math.nan, "pruned_at_step": p.step})
    except LeaseLost:
        return None  # the new holder marks this Optuna trial failed
    except KeyboardInterrupt:
        store.release(run_id, worker)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    except Exception as exc:
        status, error = FAILED, _failure(exc)
    metrics["n_tuning_seeds"] = len(seeds)
    if not store.finish(run_id, worker, status, metrics=metrics, curves=curves, compute=compute,
                        manifest=info, error=error):
        return None
    try:
        if status == DONE:
            study.tell(trial, metrics[tuning.METRIC], skip_if_finished=True)
        else:
            study.tell(trial, state=TrialState.PRUNED if status == PRUNED else TrialState.FAIL, skip_if_finished=True)
    except Exception as exc:  # the store has the outcome; Optuna is reconciled when evaluation is registered
        print(f"warning: telling Optuna about {run_id} failed: {exc}", file=sys.stderr)
    _mirror(env, run_id)
    tuning.register_evaluation(store, env.suite, cell, storage)
    return status


def _no_test(row: dict[str, Any]) -> dict[str, Any]:
    """Tuning never looks at the test set: its curves keep training and validation figures only."""
    return {k: v for k, v in row.items() if not k.startswith("test_")}


# ---------------------------------------------------------------- local worker processes
def assign_devices(device: str, n: int) -> list[str]:
    """One device per worker: round-robin over the GPUs for ``auto`` / ``cuda``, else the given one."""
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count:
            return [f"cuda:{i % count}" for i in range(n)]
        if device == "cuda":
            raise RuntimeError("--device cuda, but no CUDA device is available")
        return ["cpu"] * n
    return [device] * n


def spawn(n: int, suite_path: Path, out: Path, store_url: str, optuna_url: str | None, tracking_uri: str | None,
          device: str = "auto", lease_s: float = LEASE_S, poll_s: float = POLL_S) -> list[subprocess.Popen]:
    """Start ``n`` ``ffbench worker`` processes on this machine (logs under ``out/logs``)."""
    devices = assign_devices(device, n)
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env.pop("MLFLOW_RUN_ID", None)
    if all(d == "cpu" for d in devices):  # n processes share the cores instead of oversubscribing them
        env.setdefault("FFBENCH_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    for i, dev in enumerate(devices):
        cmd = [sys.executable, "-m", "ffbench.cli", "worker", str(suite_path), "--out", str(out), "--store", store_url,
               "--device", dev, "--lease", str(lease_s), "--poll", str(poll_s), "--no-init", "--no-progress"]
        cmd += ["--optuna-storage", optuna_url] if optuna_url else []
        cmd += ["--tracking-uri", tracking_uri] if tracking_uri else ["--no-tracking"]
        log = open(logs / f"worker-{i}.log", "ab")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return procs


def wait_for(procs: list[subprocess.Popen], store: Store, suite: Suite, design: Design, bar=None,
             interval: float = 1.0) -> list[int]:
    """Wait for local worker processes, updating a progress bar from the store; return exit codes."""
    try:
        while any(p.poll() is None for p in procs):
            if bar is not None:
                bar.n = progress(store, suite, design)["finished"]
                bar.refresh()
            time.sleep(interval)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # workers give their runs back
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _release_dead(procs, store)
        raise
    _release_dead(procs, store)
    if bar is not None:
        bar.n = progress(store, suite, design)["finished"]
        bar.refresh()
    return [p.returncode for p in procs]


def _release_dead(procs: list[subprocess.Popen], store: Store) -> None:
    """A local worker that crashed or was killed holds no run any more: give its runs back now."""
    for p in procs:
        if p.returncode:
            n = store.release_worker(f"{worker_name().rsplit(':', 1)[0]}:{p.pid}")
            if n:
                print(f"worker process {p.pid} exited with {p.returncode}; gave back {n} run(s) it held",
                      file=sys.stderr)


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C: the worker gives its run back before it exits."""
    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)


def set_threads() -> None:
    n = os.environ.get("FFBENCH_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


__all__ = ["Env", "LEASE_S", "POLL_S", "Heartbeat", "LeaseLost", "init_suite", "work", "execute_row", "spawn",
           "wait_for", "assign_devices", "progress", "expected_ids", "EVALUATION", "TUNING"]
