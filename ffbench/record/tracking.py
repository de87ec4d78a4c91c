"""The MLflow mirror of the results store: experiment = suite, parent run = cell, child run = seed.

The store stays the source of truth and MLflow is a projection of it that can be replayed at any time:
a finished row is saved first and mirrored afterwards, and the store records which rows are completely
in MLflow (``Store.mark_mirrored``), so ``sync`` copies whatever a kill or an outage left out. Every
write is idempotent: a child is found by its tag ``ffbench.run_id`` and completed, never duplicated;
a parent is found by its cell ID and created once, when the cell's first run starts (under a file lock
beside a local store; against a server by create-then-recheck, keeping the oldest), and ends with the
cell's last run, so its duration is the cell's own.

A run is streamed while it trains (``LiveRun``): its child is created RUNNING when the run starts and
each epoch's metrics go out in one ``log_batch`` on a background thread, so training never waits for
MLflow; the mirror of the finished row then completes the same child. Every point has a deterministic
step (the epoch) and timestamp (the run's start plus its cumulative training seconds, both in the
store), so the mirror and any replay write exactly the points already streamed, which MLflow keeps once.
A child left by an abandoned attempt of the same run (another start time) is replaced, not extended.

MLflow never stops a suite: calls time out after seconds, and the first failure puts the tracker in a
degraded mode for the rest of the process (one warning naming the tracking URI; later calls return at
once), with the backlog left in the store for ``ffbench sync``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ffbench.core.config import canonical_json
from ffbench.core.filelock import file_lock
from ffbench.core.paths import OutsideError, inside

if TYPE_CHECKING:  # pragma: no cover
    from ffbench.record.store import RunRow

logger = logging.getLogger(__name__)

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
# MLflow's own defaults (120 s timeout, 7 retries with backoff) block about 4 minutes per call when the
# server is down; the user's settings win
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
COMPLETE = "ffbench.mirrored"  # set last on a child: a child without it was cut short and is completed
STARTED = "ffbench.started"  # the attempt a child belongs to (the run's start time in the store)
SUPERSEDED = "ffbench.superseded"  # on a parent: its cell is no longer in the suite's design (history, not results)
# MLflow 3 opens an experiment on its GenAI pages unless it is a model-training one: the experiment tag,
# and the UI's own switch (the `workflowType` query parameter, else the browser's last choice)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
UI_WORKFLOW = "workflowType=machine_learning"
QUIET_LOGGERS = ("mlflow", "alembic")
# MLflow logs a database error's whole traceback before raising it; the tracker's one warning says it
SILENT_LOGGERS = ("mlflow.store.db.utils",)
# MLflow refusing one request (a bad value, a clash): that write fails, the tracker stays up
_REFUSALS = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "BAD_REQUEST",
    "INVALID_STATE",
}
_DOWN: dict[str, str] = {}  # tracking URI -> why it is off for the rest of this process


def configure_environment() -> None:
    """Short HTTP timeouts and retries unless the user set them, and MLflow's usage telemetry off unless
    FFBENCH_MLFLOW_TELEMETRY=1. Telemetry is decided when mlflow is imported, so call this first (the
    Tracker does; so should any command that starts an MLflow server)."""
    for k, v in HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    if os.environ.get("FFBENCH_MLFLOW_TELEMETRY") != "1":
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        os.environ["DO_NOT_TRACK"] = "true"
        if "mlflow.telemetry.client" in sys.modules:  # imported earlier: drop the client it started
            from mlflow.telemetry.client import set_telemetry_client

            set_telemetry_client()


def quiet_logging(verbose: bool = False) -> None:
    """MLflow's INFO lines (database migrations, run links) off unless ``verbose``: MLflow reads
    MLFLOW_LOGGING_LEVEL when imported, and the loggers are set here for an MLflow imported already."""
    level = "INFO" if verbose else "WARNING"
    if verbose:
        os.environ["MLFLOW_LOGGING_LEVEL"] = level
    else:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(os.environ["MLFLOW_LOGGING_LEVEL"] if name == "mlflow" else level)
    for name in SILENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)


def experiment_url(base: str, experiment_id: str) -> str:
    """The address of an experiment's run table in the MLflow UI."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_WORKFLOW}"


def epoch_points(curves: Iterable[dict[str, Any]], started: float | None) -> Iterator[tuple[int, int, dict]]:
    """(step, timestamp in ms, metrics) per epoch row, in order: the step is the epoch, the timestamp the
    run's start plus its training seconds so far. The one rule for streaming and for the mirror, so a
    replay writes the very points streamed (MLflow keeps identical points once)."""
    start_ms = int(round((started or 0.0) * 1000))
    seconds = 0.0
    for row in curves:
        seconds += float(row.get("epoch_time_s") or 0.0)
        metrics = {k: float(v) for k, v in row.items() if k not in ("epoch", "seed") and _finite(v)}
        yield int(row["epoch"]), start_ms + int(round(seconds * 1000)), metrics


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"


def lock_path(uri: str) -> Path | None:
    """The lock file that serialises MLflow set-up across processes for a local store (beside a SQLite
    database, inside a file store's folder); None for servers and remote databases."""
    if uri.startswith("sqlite:"):
        db = uri.split("://", 1)[1].split("?", 1)[0][1:] if "://" in uri else ""
        if db in ("", ":memory:"):
            return None
        path = Path(db)
        return path.with_name(path.name + ".lock")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri) / ".ffbench.lock"
    return None


class MlflowDatabaseError(RuntimeError):
    """A local MLflow database that cannot be used and cannot be rebuilt here; the message says what to do."""


def sqlite_file(uri: str) -> Path | None:
    """The file of a local SQLite tracking URI (None for anything else)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if db in ("", ":memory:") else Path(db)


def half_created(path: Path) -> str | None:
    """Why an MLflow SQLite database was left half-made by a kill or a full disk while MLflow created its
    tables (a migration's temporary table, no recorded schema version), or None."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (
                con.execute("SELECT version_num FROM alembic_version").fetchall() if "alembic_version" in tables else []
            )
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"SQLite cannot read it: {exc}"
    tmp = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if tmp:
        return f"a migration was cut short (table {tmp[0]})"
    if not tables:
        return "it has no tables"
    if not version:
        return "its schema version is missing"
    return None


def _holds_runs(path: Path) -> bool:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            return bool(con.execute("SELECT count(*) FROM runs").fetchone()[0])
        finally:
            con.close()
    except sqlite3.DatabaseError:  # no runs table, or unreadable: nothing of it can be read back anyway
        return False


def _forget_engine(uri: str) -> None:
    """Close MLflow's cached engine of ``uri`` (its pooled connections would keep a replaced file open)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def create_sqlite_db(path: Path) -> bool:
    """Make a new MLflow SQLite database at ``path`` whole: MLflow creates its tables in a temporary file of
    the same folder, which is then linked into place, so a kill or a full disk never leaves a half-created
    database there. Returns False when another process made it first. Call it under the tracker's lock."""
    from mlflow.tracking import MlflowClient

    for stale in path.parent.glob(f".{path.name}.*.new*"):  # left by a process killed while creating
        stale.unlink(missing_ok=True)
    # a name never used before: MLflow keeps the store of every URI it opened for the rest of the process
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{time.time_ns()}.new")
    uri = f"sqlite:///{tmp}"
    try:
        MlflowClient(tracking_uri=uri)  # runs MLflow's schema migration on the temporary file
        _forget_engine(uri)
        os.link(tmp, path)  # atomic, and never over a database that exists
        return True
    except FileExistsError:
        return False
    finally:
        _forget_engine(uri)
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}{k}": (canonical_json(v) if isinstance(v, (dict, list)) else str(v)) for k, v in d.items()}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _oldest(found: list) -> Any:
    return min(found, key=lambda r: (r.info.start_time or 0, r.info.run_id))


class Tracker:
    """Writes to one MLflow tracking URI; never raises into the suite (see the module docstring)."""

    def __init__(self, tracking_uri: str, artifact_root: Path):
        configure_environment()
        os.environ.pop("MLFLOW_RUN_ID", None)  # a stray run id would override our parent runs
        self.uri = tracking_uri
        self.artifact_root = Path(artifact_root).resolve()
        self.lock = lock_path(tracking_uri)
        self.client: Any = None
        self.experiment_id: str | None = None
        self.suite_name: str | None = None  # the experiment's name
        self.skipped = 0  # finished runs this process could not mirror (left for `ffbench sync`)
        self.created = False  # this process made the (local) MLflow database: nothing the store says is in it
        self._parents: dict[str, str] = {}
        self._queue: queue.Queue | None = None  # streamed writes, done in order by one background thread
        self._guard("open the tracking store", self._connect)

    # ------------------------------------------------------------ failure policy
    @property
    def degraded(self) -> str | None:
        """Why MLflow is off for the rest of this process, or None while it works."""
        return _DOWN.get(self.uri)

    def _guard(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        if self.degraded or (self.client is None and fn != self._connect):
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            if isinstance(exc, MlflowDatabaseError):
                _DOWN[self.uri] = str(exc)
                logger.warning(
                    f"warning: {exc}; MLflow is off for the rest of this process (the results store keeps every run)"
                )
                return None
            if getattr(exc, "error_code", None) in _REFUSALS:
                logger.warning(
                    f"warning: MLflow at {self.uri} refused to {what} ({reason}); the results store keeps it"
                )
                return None
            _DOWN[self.uri] = reason
            logger.warning(
                f"warning: MLflow at {self.uri} is unavailable ({what}: {reason}); mirroring is off for the "
                f"rest of this process, the results store keeps every run and `ffbench sync` copies them later"
            )
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.lock) if self.lock is not None else contextlib.nullcontext():
            yield

    def _connect(self) -> None:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:") and self.lock is not None:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        path = sqlite_file(self.uri)
        with self._locked():  # the first client on a fresh database runs MLflow's schema migration
            if path is None:
                self.client = MlflowClient(tracking_uri=self.uri)
                return
            why = half_created(path) if path.exists() else None
            if why is None and path.exists():
                try:
                    self.client = MlflowClient(tracking_uri=self.uri)
                    return
                except Exception as exc:  # a migration that a kill left between two of its steps
                    if "already exists" not in str(exc):
                        raise
                    why = f"its schema is half-migrated ({str(exc).strip().splitlines()[0][:200]})"
            if why is not None:
                self._discard(path, why)
            self.created = create_sqlite_db(path)
            self.client = MlflowClient(tracking_uri=self.uri)

    def _discard(self, path: Path, why: str) -> None:
        """Remove a half-created MLflow database that holds no run (the store replays everything into the new
        one); refuse one that holds runs, saying how to rebuild it."""
        if _holds_runs(path):
            raise MlflowDatabaseError(
                f"the MLflow database {path} is damaged ({why}); it is a copy of the results store: move it away "
                f"(mv {path} {path}.broken) and `ffbench sync` rebuilds it from the store"
            )
        _forget_engine(self.uri)
        for f in (
            path,
            path.with_name(path.name + "-journal"),
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-shm"),
        ):
            f.unlink(missing_ok=True)
        logger.info(
            f"note: the MLflow database {path} was left half-created ({why}) and holds no run: made again; "
            f"the results store fills it"
        )

    # ------------------------------------------------------------ find or create, once
    def _search(self, filter_string: str, max_results: int = 100) -> list:
        return list(self.client.search_runs([self.experiment_id], filter_string, max_results=max_results))

    def _find_or_create(self, filter_string: str, create: Callable[[], str]) -> tuple[str, Any]:
        """(run ID, the run found or None if created). Under the lock for local stores; against a server,
        create and search again: every process keeps the oldest and deletes a duplicate it made."""
        with self._locked():
            found = self._search(filter_string)
            if found:
                return (keep := _oldest(found)).info.run_id, keep
            rid = create()
            if self.lock is None:
                keep = _oldest(self._search(filter_string) or [self.client.get_run(rid)])
                if keep.info.run_id != rid:
                    self.client.delete_run(rid)
                    return keep.info.run_id, keep
            return rid, None

    # ------------------------------------------------------------ experiment and parents
    def init_experiment(self, suite_name: str, suite_version: int = 0, description: str = "") -> str | None:
        return self._guard(f"open experiment {suite_name!r}", self._init_experiment, suite_name, description)

    def _init_experiment(self, suite_name: str, description: str) -> str:
        from mlflow.exceptions import MlflowException

        with self._locked():
            exp = self.client.get_experiment_by_name(suite_name)
            if exp is None:
                try:
                    eid = self.client.create_experiment(
                        suite_name,
                        artifact_location=inside(self.artifact_root, suite_name).as_uri(),
                        tags={"ffbench.suite": suite_name, "mlflow.note.content": description, **EXPERIMENT_KIND},
                    )
                except MlflowException as exc:  # another machine created it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    eid = self.client.get_experiment_by_name(suite_name).experiment_id
            else:
                eid = exp.experiment_id
                if exp.lifecycle_stage == "deleted":  # deleted in the UI: bring it back rather than fail
                    self.client.restore_experiment(eid)
                for k, v in EXPERIMENT_KIND.items():  # experiments made by an earlier ffbench
                    if exp.tags.get(k) != v:
                        self.client.set_experiment_tag(eid, k, v)
        if self.suite_name != suite_name:
            self._parents.clear()
        self.experiment_id, self.suite_name = eid, suite_name
        return eid

    def parent_run(
        self,
        cell_id: str,
        factors: dict[str, Any],
        config: dict[str, Any],
        suite_version: int,
        started: float | None = None,
    ) -> str | None:
        """The cell's parent run, created once whichever process asks first; ``started`` (seconds since the
        epoch): the start of the cell's first run, its start time."""
        return self._guard(
            f"create the parent run of cell {cell_id}",
            self._parent_run,
            cell_id,
            factors,
            config,
            suite_version,
            started,
        )

    def _parent_run(
        self,
        cell_id: str,
        factors: dict[str, Any],
        config: dict[str, Any],
        suite_version: int,
        started: float | None = None,
    ) -> str:
        if cell_id in self._parents:
            return self._parents[cell_id]
        from ffbench.plan.design import run_name

        name = run_name(factors)
        tags = {
            "ffbench.cell_id": cell_id,
            "ffbench.kind": "cell",
            "ffbench.suite_version": str(suite_version),
            **_flat("", factors),
            **_flat("cfg.", _config_tags(config)),
        }
        rid, _ = self._find_or_create(
            f"tags.`ffbench.cell_id` = '{cell_id}' and tags.`ffbench.kind` = 'cell'",
            lambda: (
                self.client.create_run(
                    self.experiment_id, run_name=name, tags=tags, start_time=_ms(started)
                ).info.run_id
            ),
        )
        self._parents[cell_id] = rid
        return rid

    def load_parents(self) -> int:
        """Learn every existing parent of the experiment in one paged search (a sync then creates only the
        missing ones); return how many are known."""
        return self._guard("list parent runs", self._load_parents) or 0

    def _load_parents(self) -> int:
        found: dict[str, list] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], "tags.`ffbench.kind` = 'cell'", max_results=1000, page_token=token
            )
            for r in page:
                found.setdefault(r.data.tags.get("ffbench.cell_id", ""), []).append(r)
            token = page.token
            if not token:
                break
        for cell_id, runs in found.items():
            self._parents.setdefault(cell_id, _oldest(runs).info.run_id)
        return len(self._parents)

    # ------------------------------------------------------------ children
    def _child_tags(self, row: RunRow, parent: str) -> dict[str, str]:
        role = row.role
        tags = {
            "mlflow.parentRunId": parent,
            "ffbench.run_id": row.run_id,
            "ffbench.cell_id": row.cell_id,
            "ffbench.kind": role,
            "ffbench.role": role,
            "ffbench.status": row.status,
            "seed": str(row.seed),
            **_flat("", row.factors),
            **_flat("cfg.", _config_tags(row.config)),
        }
        if row.started is not None:
            tags[STARTED] = repr(float(row.started))
        if row.trial is not None:
            tags["ffbench.trial"] = str(row.trial)
        if row.generation:  # executed again on purpose (--rerun): a child of its own, not the old one
            tags["ffbench.generation"] = str(row.generation)
        if row.optuna_trial is not None:
            tags["ffbench.optuna_trial"] = str(row.optuna_trial)
        for k, v in (row.params or {}).items():
            tags[f"{'tuning' if role == 'tuning' else 'tuned'}.{k}"] = str(v)
        if row.error:
            tags["ffbench.error"] = row.error[:4000]
        manifest = row.manifest or {}
        tags.update({f"manifest.{k}": str(v)[:4000] for k, v in manifest.items() if not isinstance(v, dict)})
        return tags

    def _child(self, row: RunRow) -> tuple[str, Any, dict[str, str]]:
        """(MLflow run ID, the child found or None if created, its tags) of a store row: found by its
        ffbench run ID (and generation), created RUNNING at the run's start time when missing. A child of
        an abandoned attempt of the run (another start time, never completed) is deleted and made anew."""
        parent = self._parent_run(
            row.cell_id,
            row.factors,
            row.config,
            row.suite_version,
            row.started or row.finished,
        )
        tags = self._child_tags(row, parent)
        name = f"seed {row.seed}" if row.role == "evaluation" else f"trial {row.trial} seed {row.seed}"
        key = f"tags.`ffbench.run_id` = '{row.run_id}'"
        if row.generation:
            key += f" and tags.`ffbench.generation` = '{row.generation}'"

        def create() -> str:
            return self.client.create_run(
                self.experiment_id, run_name=name, tags=tags, start_time=_ms(row.started or row.finished)
            ).info.run_id

        rid, found = self._find_or_create(key, create)
        if (
            found is not None
            and STARTED in tags
            and found.data.tags.get(COMPLETE) != "1"
            and found.data.tags.get(STARTED, tags[STARTED]) != tags[STARTED]
        ):
            self.client.delete_run(rid)
            rid, found = self._find_or_create(key, create)
        return rid, found, tags

    def log_run(self, row: RunRow) -> str | None:
        """Mirror one finished run (a store row) as a child of its cell's parent run; idempotent. Returns the
        MLflow run ID, or None when MLflow is down or refused (the row stays unmirrored)."""
        self.flush()  # the run's streamed epochs first: the mirror completes that child
        return self._guard(f"mirror run {row.run_id}", self._log_run, row)

    def _log_run(self, row: RunRow) -> str:
        from mlflow.entities import Metric, Param, RunTag

        rid, found, tags = self._child(row)
        # already complete: the store had not recorded it (a kill in between), or an older ffbench mirrored it
        if found is not None and (found.data.tags.get(COMPLETE) == "1" or rid == row.mlflow_run_id):
            return rid
        # the same steps and timestamps as the streamed epochs (epoch_points): nothing is written twice
        metrics = [
            Metric(k, v, ts, step) for step, ts, m in epoch_points(row.curves or [], row.started) for k, v in m.items()
        ]
        ts = _ms(row.finished or row.started) or 0
        finals = {**(row.metrics or {}), **(row.compute or {})}
        metrics += [Metric(f"final.{k}", float(v), ts, 0) for k, v in finals.items() if _finite(v)]
        params = [Param(k[:250], str(v)[:6000]) for k, v in _config_tags(row.config).items()]
        self._batch(rid, metrics, params, [RunTag(k, v) for k, v in tags.items()])
        state = {"done": "FINISHED", "pruned": "KILLED"}.get(row.status, "FAILED")
        self.client.set_terminated(rid, state, end_time=ts or None)
        self.client.set_tag(rid, COMPLETE, "1")
        return rid

    # ------------------------------------------------------------ streaming while a run trains
    def live(self, row: RunRow) -> LiveRun:
        """Stream a claimed row (``started`` set) while it trains: see ``LiveRun``."""
        return LiveRun(self, row)

    def _submit(self, what: str, fn: Callable, *args: Any) -> None:
        """Queue an MLflow write for the background thread (the failure policy of ``_guard`` applies)."""
        if self.degraded or self.client is None:
            return
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(target=self._drain, args=(self._queue,), name="ffbench-mlflow", daemon=True).start()
        self._queue.put((what, fn, args))

    def _drain(self, q: queue.Queue) -> None:
        while True:
            what, fn, args = q.get()
            try:
                self._guard(what, fn, *args)
            finally:
                q.task_done()

    def flush(self) -> None:
        """Wait until every streamed write is done."""
        if self._queue is not None:
            self._queue.join()

    # ------------------------------------------------------------ aggregates and artifacts
    def log_cell_summary(
        self,
        cell_id: str,
        factors: dict[str, Any],
        config: dict[str, Any],
        suite_version: int,
        summary: dict[str, Any],
        done: bool,
        budget_curve: list[tuple[int, float]] | None = None,
        span: tuple[float | None, float | None] = (None, None),
    ) -> None:
        """Aggregate figures across a cell's evaluation seeds onto its parent run (rank/compare in the UI);
        for a tuned cell also the tuning outcome and its budget curve (best validation accuracy after k
        trials, as the metric ``tuning.best_val_acc`` at step k). ``span``: the start of the cell's first
        run and the end of its last (seconds since the epoch), the parent's start and end."""
        self._guard(
            f"update the aggregate of cell {cell_id}",
            self._log_cell_summary,
            cell_id,
            factors,
            config,
            suite_version,
            summary,
            done,
            budget_curve,
            span,
        )

    def _log_cell_summary(
        self, cell_id, factors, config, suite_version, summary, done, budget_curve, span=(None, None)
    ) -> None:
        from mlflow.entities import Metric, RunTag

        rid = self._parent_run(cell_id, factors, config, suite_version, span[0])
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if _finite(v)]
        metrics += [Metric("tuning.best_val_acc", float(v), now, int(k)) for k, v in (budget_curve or [])]
        tags = [RunTag(k, str(v)) for k, v in summary.items() if not _finite(v) and v is not None]
        self._batch(rid, metrics, [], tags)
        if done:
            self.client.set_terminated(rid, "FINISHED", end_time=_ms(span[1]))

    def close_parents(self, complete: set[str], started: Iterable[tuple] = ()) -> None:
        """After an interruption: no parent is left RUNNING (FINISHED when its cell is ``complete``, else
        KILLED until a later run's aggregate step finishes it), and every cell in ``started`` ((cell ID,
        factors, config, suite version) of the cells whose runs were claimed) has one, even if the
        interruption came before its first run reached MLflow."""
        self.flush()
        self._guard("close the parent runs", self._close_parents, complete, list(started))

    def _close_parents(self, complete: set[str], started: list[tuple] = ()) -> None:
        self._load_parents()  # parents that worker processes created as their cells started
        for cell in started:
            self._parent_run(*cell)
        for cell_id, rid in self._parents.items():
            if self.client.get_run(rid).info.status == "RUNNING":
                self.client.set_terminated(rid, "FINISHED" if cell_id in complete else "KILLED")

    def mark_superseded(self, current: Iterable[str], superseded: Iterable[str]) -> None:
        """Tag the parents of cells the suite's design no longer declares ``ffbench.superseded = true`` (their
        aggregates are history, not results) and those of the ``current`` cells ``false``."""
        self._guard("tag superseded cells", self._mark_superseded, set(current), set(superseded))

    def _mark_superseded(self, current: set[str], superseded: set[str]) -> None:
        self._load_parents()
        for cell_id, rid in self._parents.items():
            if cell_id in current or cell_id in superseded:
                self.client.set_tag(rid, SUPERSEDED, "true" if cell_id in superseded else "false")

    def delete_cells(self, cell_ids: Iterable[str]) -> int:
        """Delete (MLflow's soft delete) the parent and child runs of these cells; return how many runs."""
        return self._guard("delete the runs of pruned cells", self._delete_cells, set(cell_ids)) or 0

    def _delete_cells(self, cell_ids: set[str]) -> int:
        n = 0
        for cell_id in sorted(cell_ids):
            for r in self.client.search_runs(
                [self.experiment_id], f"tags.`ffbench.cell_id` = '{cell_id}'", max_results=5000
            ):
                self.client.delete_run(r.info.run_id)
                n += 1
            self._parents.pop(cell_id, None)
        return n

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        """Attach files (reports, tables) to the experiment through a dedicated 'suite' run."""
        self._guard("attach report files", self._log_artifacts, list(paths), artifact_path)

    def _log_artifacts(self, paths: list[Path], artifact_path: str | None) -> None:
        rid, _ = self._find_or_create(
            "tags.`ffbench.kind` = 'suite'",
            lambda: (
                self.client.create_run(
                    self.experiment_id, run_name="suite report", tags={"ffbench.kind": "suite"}
                ).info.run_id
            ),
        )
        self.check_artifacts(self.client.get_run(rid).info.artifact_uri, artifact_path)
        for p in paths:
            self.client.log_artifact(rid, str(p), artifact_path)
        self.client.set_terminated(rid, "FINISHED")

    def check_artifacts(self, artifact_uri: str, artifact_path: str | None = None) -> None:
        """Refuse a local artifact location outside this tracker's artifact folder (an edited experiment in
        ``mlflow.db``, or a copied output folder whose database still points at the original); a remote one
        (a server's, a bucket) is the server's to place."""
        parsed = urlparse(artifact_uri)
        if parsed.scheme not in ("", "file"):
            return
        from urllib.request import url2pathname

        local = Path(url2pathname(parsed.path) if parsed.scheme else artifact_uri)
        try:
            inside(self.artifact_root, local, artifact_path or "")
        except OutsideError as exc:
            raise MlflowDatabaseError(
                f"the MLflow database {self.uri} places artifacts at {exc.args[0]}: nothing was written there"
            ) from None

    def _batch(self, rid: str, metrics: list, params: list, tags: list) -> None:
        for i in range(0, max(len(metrics), 1), MAX_BATCH):
            self.client.log_batch(
                rid, metrics=metrics[i : i + MAX_BATCH], params=params if i == 0 else [], tags=tags if i == 0 else []
            )

    # ------------------------------------------------------------ what is left
    def backlog_message(self, store, suite_name: str) -> str | None:
        """One line for the end of a command when runs await mirroring (None when MLflow is complete)."""
        waiting = len(store.unmirrored(suite_name, self.uri))
        if not waiting:
            return None
        why = f" (MLflow unavailable: {self.degraded})" if self.degraded else ""
        return (
            f"{waiting} finished run(s) of {suite_name!r} await mirroring to {self.uri}{why}; "
            f"`ffbench sync {suite_name}` copies them"
        )


class LiveRun:
    """A run's child in MLflow while it trains: created RUNNING at the run's start, and each epoch's
    metrics sent in one ``log_batch`` when the epoch ends. The writes happen on the tracker's background
    thread, in order, so the training thread only queues them; the mirror of the finished row completes
    the child (``Tracker.log_run`` waits for the queue first)."""

    def __init__(self, tracker: Tracker, row: RunRow):
        self.tracker, self.row = tracker, row
        self.rows: list[dict[str, Any]] = []  # the epochs so far, as the store will hold them
        # the child (and its cell's parent) exist before training starts: one call per run, not per epoch
        tracker.flush()
        found = tracker._guard(f"start the MLflow run of {row.run_id}", tracker._child, row)
        self.run_id: str | None = found[0] if found else None

    def stop(self) -> None:
        """The run was interrupted and given back: its child is KILLED until the run is executed again."""
        self.tracker.flush()
        if self.run_id is not None:
            self.tracker._guard(
                f"close the MLflow run of {self.row.run_id}",
                self.tracker.client.set_terminated,
                self.run_id,
                "KILLED",
            )

    def epoch(self, epoch_row: dict[str, Any]) -> None:
        """Queue one finished epoch (a row of the run's curves)."""
        self.rows.append(epoch_row)
        step, ts, metrics = list(epoch_points(self.rows, self.row.started))[-1]
        self.tracker._submit(f"stream epoch {step} of {self.row.run_id}", self._log, step, ts, metrics)

    def _log(self, step: int, ts: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if self.run_id is not None:
            self.tracker._batch(self.run_id, [Metric(k, v, ts, step) for k, v in metrics.items()], [], [])


def _forget_if_new(store, tracker: Tracker) -> None:
    """Once, before the first write: a database this tracker made holds none of what the store says was
    mirrored to its URI (a deleted or half-created one was replaced), so all of it counts as missing."""
    if tracker.created:
        store.forget_mirror(tracker.uri)
        tracker.created = False


def mirror(store, tracker: Tracker, row: RunRow | str) -> bool:
    """Copy one finished store row (or run ID) into MLflow and record that in the store. False when MLflow
    is down or refused it: the row stays unmirrored for the next sync."""
    if tracker.degraded:
        tracker.skipped += 1
        return False
    _forget_if_new(store, tracker)
    if isinstance(row, str):
        row = store.rows(run_id=row)[0]
    rid = tracker.log_run(row)
    if rid is None:
        tracker.skipped += 1
        return False
    store.mark_mirrored(row.run_id, rid, tracker.uri)
    return True


def sync(store, suite_name: str, tracker: Tracker, aggregates: Callable[[], None] | None = None) -> tuple[int, int]:
    """Replay into MLflow whatever of ``suite_name`` the store holds and MLflow lacks: the experiment, the
    parents and children of every finished run not yet mirrored to this tracking URI, and then (when given)
    ``aggregates()``, which refreshes the parents' cell aggregates. Returns (mirrored, failed); never raises
    for MLflow trouble. Safe to run while workers write (every write is idempotent)."""
    _forget_if_new(store, tracker)
    rows = store.unmirrored(suite_name, tracker.uri)
    if tracker.experiment_id is None or tracker.suite_name != suite_name:
        tracker.init_experiment(suite_name)
    if rows:
        tracker.load_parents()
    mirrored = sum(mirror(store, tracker, r) for r in rows)
    if aggregates is not None and not tracker.degraded:
        aggregates()
    return mirrored, len(rows) - mirrored


def _ms(seconds: float | None) -> int | None:
    return int(round(seconds * 1000)) if seconds else None


def _config_tags(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if not isinstance(v, dict) and k != "seed"}
    for group in ("method_options", "backbone_options", "dataset_options"):
        for k, v in (config.get(group) or {}).items():
            out[f"{group.split('_')[0]}.{k}"] = v
    return out
