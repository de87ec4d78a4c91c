"""Launch a suite: one set-up shared by ``ffbench run`` and ``ffbench worker``, then workers.

The set-up (``open_session``) validates the suite, enumerates cells and runs, opens the results store,
chooses the Optuna storage, opens the MLflow tracker, and initialises the store, the Optuna studies and
MLflow (experiment and every cell's parent run) once, before any worker starts. Then ``run_suite`` runs
one worker in this process or a pool of N worker processes (``pool.py``), and ``run_worker`` does the
same for a worker started on its own machine. The store decides what is left to do, so running a suite
again after a crash or a kill executes only what is missing; a run whose worker died is taken over once
its heartbeat is older than the lease (at once when it died on this host). A run that diverges or raises
inside a method is recorded as a failed outcome, not a crash; unreadable data, a full disk or a failing
store stop the suite and leave the run pending (``execute.InfrastructureError``). SIGINT and SIGTERM stop
it cleanly (``pool.Interrupted``: runs given back, local workers stopped, MLflow parents closed).

MLflow is a copy of the store: the set-up catches up what earlier processes could not mirror, the end of
a suite does it again and then refreshes the cells' aggregates, and an unreachable MLflow never stops a
suite. At planning the runner says which cells are new because their code changed
(``design.code_fingerprint``), and ``rerun`` executes matching cells again on purpose, keeping the old
rows as superseded. The runner computes no statistics (``results.py`` reads them from ``stats``).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffbench.core.config import canonical_json
from ffbench.execution import pool
from ffbench.execution.execute import Env
from ffbench.execution.lease import timing
from ffbench.execution.workers import expected_ids, progress, progress_bar, work
from ffbench.plan.design import EVALUATION, Design, code_changes, expand
from ffbench.plan.suite import Suite, SuiteError, check_cells, load
from ffbench.plan.tuning import REPEAT
from ffbench.record.store import FINISHED, Store, worker_name

logger = logging.getLogger(__name__)


@dataclass
class Paths:
    out: Path

    @property
    def store(self) -> Path:
        return self.out / "results.db"

    @property
    def mlflow_db(self) -> Path:
        return self.out / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.out / "mlartifacts"

    @property
    def weights(self) -> Path:
        return self.out / "pretrained"  # transfer suites' source backbones

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"  # unfinished runs' training state (ffbench.training.checkpoint)


def default_out(suite: Suite) -> Path:
    return Path("ffbench-out") / suite.name


def prepare(
    suite_ref: str, out: str | Path | None = None, cells: Sequence[str] = (), seeds: Sequence[int] = ()
) -> tuple[Suite, Design, Paths]:
    """The suite, its design (only the ``cells`` and ``seeds`` asked for, when given: ``Design.select``) and
    where its outputs go; the suite's warnings and the checks of its cells come first."""
    suite = load(suite_ref)
    for line in suite.warnings:  # usable as it is, but probably not what was meant
        logger.warning(f"warning: {line}")
    design = expand(suite).select(cells, seeds)
    for line in design.warnings:  # a suite value that meets a method's recipe: never silently
        logger.warning(f"warning: {line}")
    check_cells(suite, design.cells)  # against the datasets' sizes, before any run is claimed
    if suite.transfer is not None:
        from ffbench.training.transfer import check_sources

        check_sources(suite, design.cells)
    paths = Paths(Path(out) if out else default_out(suite))
    return suite, design, paths


def open_tracker(suite: Suite, paths: Paths, tracking_uri: str | None):
    from ffbench.record.tracking import Tracker, default_tracking_uri

    tracker = Tracker(tracking_uri or default_tracking_uri(paths.out), paths.artifacts)
    tracker.init_experiment(suite.name, suite.version, suite.description)
    return tracker


def optuna_url(design: Design, paths: Paths, store_url: str | None, given: str | None, workers: int) -> str | None:
    """Where the Optuna studies live: the given URL; else the store's database when it is not SQLite
    (several machines); else a journal file under the output directory (one machine)."""
    if not any(c.tuning for c in design.cells):
        return given
    from ffbench.execution.studies import default_storage

    url = given or (
        store_url
        if store_url and "://" in store_url and not store_url.startswith("sqlite")
        else default_storage(paths.out)
    )
    if url.startswith("sqlite") and workers > 1:
        raise SuiteError(
            f"--optuna-storage {url}: SQLite is not safe for parallel tuning (Optuna FAQ: 'database "
            f"is locked'); use the default journal file on one machine, or PostgreSQL"
        )
    return url


def init_suite(suite: Suite, design: Design, store: Store, tracker=None, optuna_url: str | None = None) -> int:
    """Make the store, the Optuna studies and the MLflow parents ready. Idempotent; returns new rows."""
    new = store.add_runs(r.store_row(suite) for r in design.initial_runs())
    store.record_design(suite.name, suite.version, design.declared)  # whose runs are the suite's results
    dropped = store.drop_unlisted_seeds(suite.name, suite.version, suite.seeds, (EVALUATION, REPEAT))
    if dropped:
        logger.info(f"note: {dropped} pending run(s) of seeds no longer in [design].seeds dropped (none had started)")
    if any(c.tuning for c in design.cells):
        from ffbench.execution.studies import ensure_studies, open_storage

        ensure_studies(open_storage(optuna_url), suite, design)
    if tracker is not None:  # a cell's parent is made when its first run starts (its start time is the cell's)
        tracker.load_parents()  # one search for the parents that exist already, not one per cell
    return new


def verify_data(design: Design) -> None:
    """Open every dataset the design uses, so a broken one stops the suite before any run is claimed."""
    from ffbench.data import datasets

    for name, root in sorted({(c.config.dataset, c.config.dataset_options.get("root")) for c in design.cells}, key=str):
        datasets.verify(name, root)


def check_data(store: Store, suite: Suite, design: Design) -> None:
    """Refuse to add runs on other data to a cell: the data each cell reads now (``datasets.identity``) must be
    the data its stored runs recorded in their manifests. DataError naming the cell, both roots and digests."""
    from ffbench.data.datasets import DataError, identity

    cells = {c.cell_id: c for c in design.cells}
    checked: set[str] = set()
    for row in store.rows(suite.name, suite_version=suite.version, cell_id=list(cells)):
        was = (row.manifest or {}).get("data")
        if not was or row.cell_id in checked:
            continue
        checked.add(row.cell_id)
        c = cells[row.cell_id].config
        now = identity(c.dataset, c.dataset_options.get("root"))
        if was.get("sha256") != now["sha256"]:
            raise DataError(
                f"cell {cells[row.cell_id].label}: its stored run {row.run_id} trained on {was.get('dataset')} "
                f"data {str(was.get('sha256'))[:12]} (root {was.get('root') or 'the default places'}), but "
                f"{c.dataset} now reads data {now['sha256'][:12]} (root {now['root'] or 'the default places'}); "
                f"runs on other data are never added to a cell: restore that data, or use another output folder "
                f"(--out)"
            )


def code_notes(store: Store, suite: Suite, design: Design) -> list[str]:
    """Lines for the planner: how many cells of which method are new because their code changed since the
    results stored for the same factor levels (or because those carry no code fingerprint)."""
    stored = store.cells(suite.name, suite.version)
    if not stored:
        return []
    latest: dict[str, dict[str, Any]] = {}
    for info in stored.values():
        key = canonical_json(info["factors"])
        if key not in latest or info["finished"] > latest[key]["finished"]:
            latest[key] = info
    counts: Counter = Counter()
    for cell in design.cells:
        old = latest.get(canonical_json(cell.factors))
        if cell.cell_id in stored or old is None:
            continue
        if old["code"] is None:
            why = "their stored results carry no code fingerprint (recorded by an earlier ffbench)"
        else:
            changes = code_changes(old["code"], cell.code)
            if not changes:
                continue  # a new cell for another reason (its configuration changed)
            why = f"{', '.join(changes)} since the stored results"
        counts[(cell.factors["method"], why)] += 1
    return [f"{n} cell{'s' * (n != 1)} of {m} {'are' if n != 1 else 'is'} new: {why}" for (m, why), n in counts.items()]


def matching_cells(design: Design, patterns: list[str]) -> list:
    """Cells whose label (method/dataset/backbone/axis=level) or method name matches a wildcard pattern."""
    return [c for c in design.cells if any(c.matches(p) for p in patterns)]


def rerun_cells(store: Store, suite: Suite, design: Design, patterns: list[str]) -> tuple[int, int]:
    """Execute the matching cells' finished evaluation runs again: the old rows are kept as superseded (the
    results and reports use the newest). Returns (cells, runs)."""
    cells = matching_cells(design, patterns)
    if not cells:
        raise SuiteError(
            f"--rerun {' '.join(patterns)}: no cell matches; the cells are "
            f"{', '.join(c.label for c in design.cells)} (patterns match a cell's label or its method)"
        )
    ids = [
        r["run_id"]
        for r in store.states(suite.name, suite.version)
        if r["cell_id"] in {c.cell_id for c in cells} and r["role"] == EVALUATION
    ]
    return len(cells), store.supersede(ids)


# ---------------------------------------------------------------- the one set-up of `run` and `worker`
@dataclass
class Session:
    """A suite made ready to work on: where its results, studies and MLflow runs go, and the lease."""

    suite: Suite
    design: Design
    paths: Paths
    store: Store
    tracker: Any
    optuna_url: str | None
    lease_s: float
    poll_s: float
    cells: Sequence[str] = ()  # the part of the suite asked for (Design.select); spawned workers get it too
    seeds: Sequence[int] = ()

    def env(self, device: str) -> Env:
        """This process's worker."""
        return Env(
            self.suite,
            self.design,
            self.store,
            worker_name(),
            device,
            self.tracker,
            self.optuna_url,
            self.lease_s,
            self.poll_s,
            weights_dir=str(self.paths.weights),
            checkpoint_dir=str(self.paths.checkpoints),
        )

    def spawn(self, n: int, device: str) -> list:
        """``n`` local worker processes on this session's store, studies and tracking (none: untracked)."""
        uri = self.tracker.uri if self.tracker is not None else None
        part = [a for p in self.cells for a in ("--cells", p)]
        part += ["--seeds", ",".join(map(str, self.seeds))] if self.seeds else []
        return pool.spawn(
            n,
            self.suite.path.resolve(),
            self.paths.out.resolve(),
            self.store.url,
            self.optuna_url,
            uri,
            device,
            self.lease_s,
            self.poll_s,
            part,
        )


def open_session(
    suite_ref: str,
    out: str | Path | None = None,
    *,
    store_url: str | None = None,
    optuna_storage: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    parallel: bool = False,
    lease_s: float | None = None,
    poll_s: float | None = None,
    init: bool = True,
    rerun: list[str] | None = None,
    cells: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> Session:
    """Load and expand the suite, check its datasets, open the store (``store_url``, default
    ``<out>/results.db``; a broken or foreign file is refused), choose the Optuna storage (``parallel``:
    several workers share it, so SQLite is refused), open the tracker (unless not ``track``), and unless
    not ``init``: say which cells are new because their code changed, supersede the ``rerun`` cells' runs,
    add the runs, studies and MLflow parents, and copy into MLflow what earlier processes could not.
    ``cells`` / ``seeds``: work on that part of the suite only (``Design.select``)."""
    from ffbench.record import tracking

    lease, poll = timing(lease_s, poll_s)  # before anything is read or claimed
    suite, design, paths = prepare(suite_ref, out, cells, seeds)
    verify_data(design)
    paths.out.mkdir(parents=True, exist_ok=True)
    pool.set_threads()
    store = Store(store_url or paths.store)
    ourl = optuna_url(design, paths, store_url, optuna_storage, 2 if parallel else 1)
    check_data(store, suite, design)
    if init:
        for line in code_notes(store, suite, design):
            print(line)
        if rerun:
            n_cells, n_runs = rerun_cells(store, suite, design, rerun)
            print(
                f"rerun: {n_runs} finished run(s) of {n_cells} cell(s) will be executed again (the old results "
                f"are kept as superseded)"
            )
    tracker = open_tracker(suite, paths, tracking_uri) if track else None
    if init:
        init_suite(suite, design, store, tracker, ourl)
        if tracker is not None:
            tracking.sync(store, suite.name, tracker)
    return Session(suite, design, paths, store, tracker, ourl, lease, poll, tuple(cells), tuple(seeds))


def aggregates(s: Session, control: str | None = None, rope=None) -> Callable[[], None]:
    """The step that refreshes every cell's aggregate on its MLflow parent; a failure there is a warning
    (the results table and CSV do not depend on it)."""
    from ffbench.execution.results import summarize_cells

    def refresh() -> None:
        try:
            summarize_cells(s.suite, s.design, s.store, s.tracker, control=control, rope=rope)
        except Exception as exc:
            logger.warning(
                f"warning: the cells' aggregates were not written to MLflow ({type(exc).__name__}: {exc}); "
                f"`ffbench sync {s.suite.name}` or `ffbench report` writes them later"
            )

    return refresh


def catch_up(s: Session, with_aggregates: bool = True) -> tuple[int, int]:
    """Copy into MLflow whatever of the suite is not there yet, then (optionally) the cells' aggregates."""
    from ffbench.record import tracking

    if s.tracker is None:
        return 0, 0
    try:
        return tracking.sync(s.store, s.suite.name, s.tracker, aggregates=aggregates(s) if with_aggregates else None)
    except Exception as exc:  # the store answered a moment ago; MLflow must never end a finished suite
        logger.warning(f"warning: catching MLflow up failed ({type(exc).__name__}: {exc})")
        return 0, 0


def _interrupted(s: Session, exc: BaseException, close_parents: bool) -> None:
    """Note how many runs are left on the exception (the command prints it), and leave no MLflow parent
    RUNNING."""
    # stopping on purpose: an MLflow call cut short by the signal must not print its traceback (the
    # tracker's own line says what was not mirrored, and `ffbench sync` replays it)
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    prog = _progress(s)
    exc.pending = prog["total"] - prog["finished"]  # type: ignore[attr-defined]
    if close_parents and s.tracker is not None:
        states = s.store.states(s.suite.name, s.suite.version)
        by_cell: dict[str, list[str]] = {}
        for st in states:
            if st["role"] == EVALUATION:
                by_cell.setdefault(st["cell_id"], []).append(st["status"])
        complete = {
            c.cell_id
            for c in s.design.cells
            if len(by_cell.get(c.cell_id, [])) == len(s.suite.seeds)
            and all(x in ("done", "failed", "pruned") for x in by_cell[c.cell_id])
        }
        started = [
            (c.cell_id, c.factors, c.config.to_dict(), s.suite.version)
            for c in s.design.cells
            if any(st["cell_id"] == c.cell_id and st.get("attempts") for st in states)
        ]
        s.tracker.close_parents(complete, started)


def _bar(s: Session, desc: str, initial: int = 0):
    return progress_bar(len(expected_ids(s.design)), initial, desc)


# ---------------------------------------------------------------- ffbench run
def run_suite(
    suite_ref: str,
    out: str | Path | None = None,
    device: str = "auto",
    tracking_uri: str | None = None,
    progress: bool = True,
    track: bool = True,
    workers: int = 1,
    store_url: str | None = None,
    optuna_storage: str | None = None,
    lease_s: float | None = None,
    poll_s: float | None = None,
    rerun: list[str] | None = None,
    cells: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Execute every run of the suite (or of its ``cells`` and ``seeds``) that is not finished yet; return a
    summary.

    workers: 1 runs in this process; N > 1 spawns N ``ffbench worker`` processes (one device each).
    store_url / optuna_storage / tracking_uri: shared locations for several machines (default: files
    under the output directory). lease_s: how stale a heartbeat must be before a run is taken over.
    rerun: wildcard patterns of cells (label or method) to execute again. SIGINT / SIGTERM raise
    ``pool.Interrupted`` (with ``pending``, the runs left) once every run in hand was given back.
    """
    with pool.interrupts():
        s = open_session(
            suite_ref,
            out,
            store_url=store_url,
            optuna_storage=optuna_storage,
            tracking_uri=tracking_uri,
            track=track,
            parallel=workers > 1,
            lease_s=lease_s,
            poll_s=poll_s,
            rerun=rerun,
            cells=cells,
            seeds=seeds,
        )
        before = _progress(s)["finished"]
        bar = _bar(s, s.suite.name, before) if progress else None
        exit_codes: list[int] = []
        try:
            if workers <= 1:
                executed = work(s.env(device), bar)
            else:
                procs = s.spawn(workers, device)
                exit_codes = pool.wait_for(procs, s.store, s.suite, s.design, bar)
                executed = len(
                    s.store.rows(
                        s.suite.name, status=list(FINISHED), worker=[f"{socket.gethostname()}:{p.pid}" for p in procs]
                    )
                )
        except KeyboardInterrupt as exc:
            _interrupted(s, exc, close_parents=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        after = _progress(s)
        catch_up(s)
    # what this command's processes ran, and what other processes on the same store finished meanwhile
    return {
        "suite": s.suite,
        "design": s.design,
        "paths": s.paths,
        "executed": executed,
        "by_others": max(0, after["finished"] - before - executed),
        "store": s.store,
        "progress": after,
        "exit_codes": exit_codes,
        "optuna_storage": s.optuna_url,
        "tracking_uri": s.tracker.uri if s.tracker is not None else None,
        "tracker": s.tracker,
    }


def _progress(s: Session) -> dict[str, int]:
    return progress(s.store, s.suite, s.design)


# ---------------------------------------------------------------- ffbench worker
def run_worker(
    suite_ref: str,
    out: str | Path | None = None,
    *,
    device: str = "auto",
    workers: int = 1,
    store_url: str | None = None,
    optuna_storage: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    lease_s: float | None = None,
    poll_s: float | None = None,
    init: bool = True,
    progress: bool = True,
    cells: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """A worker against a shared store (one per machine or device), or ``workers`` local ones. Ctrl-C or
    SIGTERM gives the run in hand back and raises ``pool.Interrupted``. Returns {worker, executed,
    progress, exit_codes, suite, store, tracker}."""
    with pool.interrupts():
        s = open_session(
            suite_ref,
            out,
            store_url=store_url,
            optuna_storage=optuna_storage,
            tracking_uri=tracking_uri,
            track=track,
            parallel=True,
            lease_s=lease_s,
            poll_s=poll_s,
            init=init,
            cells=cells,
            seeds=seeds,
        )
        common = {"suite": s.suite, "store": s.store, "tracker": s.tracker}
        if workers > 1:
            try:
                codes = pool.wait_for(s.spawn(workers, device), s.store, s.suite, s.design)
            except KeyboardInterrupt as exc:
                _interrupted(s, exc, close_parents=True)
                raise
            catch_up(s)
            return {"worker": None, "executed": None, "progress": _progress(s), "exit_codes": codes, **common}
        env = s.env(device)
        bar = _bar(s, f"{s.suite.name} worker") if progress else None
        try:
            executed = work(env, bar)
        except KeyboardInterrupt as exc:
            _interrupted(s, exc, close_parents=False)  # other workers may still be at work on the cells
            raise
        finally:
            if bar is not None:
                bar.close()
        prog = _progress(s)
        if init and prog["finished"] == prog["total"]:  # (under a launcher, the launcher does it)
            catch_up(s)
    return {"worker": env.worker, "executed": executed, "progress": prog, "exit_codes": [], **common}


# ---------------------------------------------------------------- how a command ends
def stopped(exc: BaseException) -> int | None:
    """For an exception that ends ``run`` / ``worker`` / ``sync`` without a traceback: print its one line
    and return the exit status (130 / 143 interrupted, 2 a refused store or unusable data, 3 the
    infrastructure failed during a run, a full disk wherever it struck); None for anything else (a bug: let it raise)."""
    from ffbench.data.datasets import DataError
    from ffbench.execution.execute import InfrastructureError
    from ffbench.record.store import StoreError, disk_full_line, is_disk_full

    if isinstance(exc, KeyboardInterrupt):
        pending = getattr(exc, "pending", None)
        left = f"{pending} runs pending" if pending is not None else "before any run started"
        print(f"interrupted: {left}, rerun the same command to resume", file=sys.stderr)
        return pool.exit_status(exc)
    if not isinstance(exc, InfrastructureError) and is_disk_full(exc):  # wherever it struck: the run stays pending
        print(f"error: {disk_full_line(exc)}", file=sys.stderr)
        return 3
    if isinstance(exc, (StoreError, DataError)):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, InfrastructureError):
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return None


def backlog(tracker, store: Store, suite: Suite) -> None:
    """Print how many runs await mirroring into MLflow, when any do."""
    if tracker is not None:
        line = tracker.backlog_message(store, suite.name)
        if line:
            print(line)
