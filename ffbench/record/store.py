"""The results store: the source of truth. One row per run, appended and updated; deleted only by
``ffbench prune`` (runs of superseded cells, named first).

SQLite under the output directory on one machine; any SQLAlchemy URL (PostgreSQL) for several.
Claiming a run is one atomic conditional UPDATE, so many workers can share a suite: a run is taken
when it is pending, or when it is running but its worker's heartbeat is older than the lease.
Rows are evaluation runs and tuning trial slots (role 'tuning', ``trial`` = slot number 0..n-1,
``optuna_trial`` = the Optuna trial number, ``params`` = the sampled parameters; an evaluation row of a
tuned cell carries the chosen parameters in ``params``). Statuses: pending, running, done, failed,
pruned (tuning trials stopped by the pruner). Lease times use the database's clock on PostgreSQL, so
machines with skewed clocks still agree on what is stale. A claim records the claiming process's host
and PID, so a process on the same host can give back at once the runs of a process that no longer
exists (across machines the lease stays the rule). A run executed again on purpose (``--rerun``) keeps
its old row, renamed ``<run_id>~g<generation>`` and marked superseded; reads skip superseded rows. The
table ``designs`` remembers the cells each suite version was last planned with (``record_design``), the
cells whose runs are the suite's results (``resultset``).

A SQLite store is created whole (built under a temporary name, then linked into place), so a file at the
store path that is empty, damaged (by SQLite's own check, write-ahead log included) or not ffbench's is
refused with a ``StoreError`` naming it, instead of being written into.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ffbench.core.config import canonical_json

PENDING, RUNNING, DONE, FAILED, PRUNED = "pending", "running", "done", "failed", "pruned"
FINISHED = (DONE, FAILED, PRUNED)

_meta = sa.MetaData()
runs = sa.Table(
    "runs",
    _meta,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("suite", sa.String(200), nullable=False, index=True),
    sa.Column("suite_version", sa.Integer, nullable=False),
    sa.Column("cell_id", sa.String(64), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),  # evaluation | tuning
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("trial", sa.Integer),  # tuning trial number, if any
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(200)),
    sa.Column("heartbeat", sa.Float),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("factors", sa.Text, nullable=False),  # JSON: the cell's factor levels (method, dataset, ...)
    sa.Column("config", sa.Text, nullable=False),  # JSON: the resolved RunConfig
    sa.Column("metrics", sa.Text),
    sa.Column("curves", sa.Text),
    sa.Column("compute", sa.Text),
    sa.Column("manifest", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("params", sa.Text),  # JSON: tuned / sampled parameters
    sa.Column("optuna_trial", sa.Integer),  # the Optuna trial number of a tuning slot's current attempt
    sa.Column("mirrored_to", sa.Text),  # the MLflow tracking URI this finished run was fully mirrored to
    sa.Column("host", sa.String(200)),  # the claiming process's host and PID (dead local claims come back at once)
    sa.Column("pid", sa.Integer),
    sa.Column("code", sa.Text),  # JSON: the code fingerprints of the cell (plugin modules and versions)
    sa.Column("generation", sa.Integer),  # how many times the run was executed again on purpose (--rerun)
    sa.Column("superseded", sa.Float),  # when a rerun replaced this row (kept, never read as current)
)
# the design each suite version was last planned with: the cells whose runs are the suite's results
designs = sa.Table(
    "designs",
    _meta,
    sa.Column("suite", sa.String(200), primary_key=True),
    sa.Column("suite_version", sa.Integer, primary_key=True),
    sa.Column("cells", sa.Text, nullable=False),  # JSON: the declared cell IDs
    sa.Column("planned", sa.Float, nullable=False),  # when
)
# added to stores created before them
_ADDED_COLUMNS = {
    "params": "TEXT",
    "optuna_trial": "INTEGER",
    "mirrored_to": "TEXT",
    "host": "VARCHAR(200)",
    "pid": "INTEGER",
    "code": "TEXT",
    "generation": "INTEGER",
    "superseded": "FLOAT",
}
_JSON = ("factors", "config", "metrics", "curves", "compute", "manifest", "params", "code")
_CORE = {"run_id", "suite", "suite_version", "cell_id", "role", "status", "worker", "heartbeat", "config"}
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class RunRow:
    """One stored run as readers see it (``Store.rows``): the table's columns, the JSON ones decoded.

    ``row["status"]`` reads a field as well (the mapping style of readers written before the fields)."""

    run_id: str
    suite: str
    suite_version: int
    cell_id: str
    role: str  # evaluation, tuning or repeat
    seed: int
    trial: int | None  # the tuning slot, if any
    status: str
    attempts: int
    worker: str | None
    heartbeat: float | None
    started: float | None
    finished: float | None
    factors: dict[str, Any]  # the cell's factor levels (method, dataset, backbone, axes)
    config: dict[str, Any]  # the resolved RunConfig
    metrics: dict[str, Any] | None
    curves: list[dict[str, Any]] | None
    compute: dict[str, Any] | None
    manifest: dict[str, Any] | None
    error: str | None
    mlflow_run_id: str | None
    params: dict[str, Any] | None  # tuned / sampled parameters
    optuna_trial: int | None
    mirrored_to: str | None
    host: str | None
    pid: int | None
    code: dict[str, Any] | None  # the cell's code fingerprints
    generation: int | None
    superseded: float | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunRow:
        """A row of the ``runs`` table as read (JSON columns as text)."""
        return cls(**{k: (json.loads(v) if v else None) if k in _JSON else v for k, v in record.items()})

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in _FIELDS else default


_FIELDS = tuple(f.name for f in fields(RunRow))
# the bookkeeping columns of the tidy table (``Store.frame``), first
_FRAME_COLUMNS = (
    "run_id",
    "suite",
    "suite_version",
    "cell_id",
    "role",
    "seed",
    "trial",
    "status",
    "error",
    "attempts",
    "mlflow_run_id",
    "optuna_trial",
)


class StoreError(RuntimeError):
    """The results store cannot be used (a broken or foreign file, a database that refuses writes); the
    message names it and what to do. Never a method's failure: the run stays pending."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def split_worker(worker: str) -> tuple[str | None, int | None]:
    """(host, pid) of a worker name ``host:pid``; (None, None) for any other name."""
    host, _, pid = worker.rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else (None, None)


def process_exists(pid: int) -> bool:
    """Whether a process with this PID exists on this host (one we may not signal counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_stale(heartbeat: float | None, now: float, lease_s: float) -> bool:
    """Whether a running row's holder is presumed gone: its heartbeat is older than the lease, or more than a
    lease ahead of this clock (a clock skewed that far, or a forged value: a live holder beats every quarter
    lease, so the row is taken over and its holder, if alive, stops at its next beat). ``Store.claim``
    applies the same rule in SQL."""
    hb = heartbeat or 0.0
    return hb < now - lease_s or hb > now + lease_s


def _url(location: str | Path) -> str:
    s = str(location)
    if "://" in s:
        return s
    path = Path(s).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///") :].split("?", 1)[0]
    return None if db in ("", ":memory:") else Path(db)


def _refuse(path: Path, what: str) -> StoreError:
    return StoreError(
        f"results store {path}: {what}. It is not a usable ffbench results store, and nothing was "
        f"written to it: move it away (mv {path} {path}.broken) to start a new store there, or "
        f"choose another output directory (--out DIR)"
    )


def check_sqlite_file(path: Path) -> None:
    """Refuse a file at the store path that is empty, damaged or not an ffbench store. SQLite's own check
    judges it (``PRAGMA quick_check``, through the write-ahead log as any reader sees it), never the file's
    size: a store cut short by a full disk keeps its latest pages in the write-ahead log and is healthy."""
    size = path.stat().st_size
    if size == 0:
        raise _refuse(path, "the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        header = fh.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise _refuse(path, "the file is not an SQLite database")
    if len(header) < 100:
        raise _refuse(path, f"the file is truncated ({size} bytes, shorter than an SQLite header)")
    try:
        con = sqlite3.connect(str(path), timeout=60)
        try:
            ok = "; ".join(r[0] for r in con.execute("PRAGMA quick_check(5)"))
            cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc):  # the check itself needs room for the write-ahead log's index
            raise StoreError(f"results store {path}: {DISK_FULL}") from None
        raise _refuse(path, f"SQLite cannot read it ({exc})") from None
    if ok != "ok":
        raise _refuse(path, f"the database is damaged (quick_check: {ok[:300]})")
    if not cols and tables:
        raise _refuse(
            path, f"an SQLite database of something else (tables {', '.join(sorted(tables)[:5])}; no table 'runs')"
        )
    if cols and not _CORE <= cols:
        raise _refuse(path, f"its table 'runs' is not ffbench's (missing {', '.join(sorted(_CORE - cols))})")


def create_sqlite_file(path: Path) -> None:
    """Build a new store under a temporary name and link it into place, so that no other process ever sees
    a half-made file at the store path (a 0-byte file there means a broken store, not a young one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    # built with a rollback journal (the store switches to WAL once in place): a write-ahead log that a full
    # disk kept from being copied back would be left behind with the temporary name, and the store torn
    engine = sa.create_engine(f"sqlite:///{tmp}", future=True)
    try:
        _meta.create_all(engine)
    finally:
        engine.dispose()
    try:
        os.link(tmp, path)  # atomic, and fails if another process made the store first
    except FileExistsError:
        pass
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def is_store_error(exc: BaseException) -> bool:
    """A database error of the store (locked for good, read-only, disk full, gone), as opposed to a
    method's own failure."""
    return isinstance(exc, (StoreError, sa.exc.SQLAlchemyError, sqlite3.Error))


DISK_FULL = (
    "the disk is full; free some space, then run the same command again to resume (runs not recorded stay pending)"
)


def disk_full_line(exc: BaseException) -> str:
    """The one line a command prints when the disk filled up (no traceback: the runs stay pending)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if DISK_FULL in text:
        return text
    where = getattr(exc, "filename", None)
    return f"{where}: {DISK_FULL}" if where else DISK_FULL


def is_disk_full(exc: BaseException | None) -> bool:
    """A full disk, however it reaches us: ENOSPC, SQLite's 'database or disk is full', or an error (MLflow's,
    SQLAlchemy's) raised from or around one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (
            (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
            or "disk is full" in str(exc).lower()
            or "no space left on device" in str(exc).lower()
        ):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


class Store:
    def __init__(self, location: str | Path):
        self.url = _url(location)
        path = _sqlite_path(self.url)
        if path is not None:
            if path.exists():
                check_sqlite_file(path)
            else:
                try:
                    create_sqlite_file(path)
                except (OSError, sa.exc.SQLAlchemyError) as exc:
                    if is_disk_full(exc):
                        raise StoreError(f"results store {path}: {DISK_FULL}") from None
                    raise StoreError(
                        f"results store {path}: cannot create it ({exc}); choose another output directory (--out DIR)"
                    ) from None
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(self.url, **kwargs)
        try:
            self._open()
        except sa.exc.SQLAlchemyError as exc:
            where = path or self.url
            if is_disk_full(exc):
                raise StoreError(f"results store {where}: {DISK_FULL}") from None
            raise StoreError(
                f"results store {where}: cannot open it for writing ({_first_line(exc)}); check "
                f"its permissions and free disk space, or choose another output directory "
                f"(--out DIR)"
            ) from None
        self.dialect = self.engine.dialect.name

    def _open(self) -> None:
        if self.url.startswith("sqlite"):
            with self.engine.begin() as c:
                c.exec_driver_sql("PRAGMA journal_mode=WAL")
        for attempt in range(5):  # PostgreSQL: another process may be creating the table at the same moment
            try:
                _meta.create_all(self.engine)
                self._migrate()
                break
            except sa.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _migrate(self) -> None:
        have = {c["name"] for c in sa.inspect(self.engine).get_columns("runs")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                try:
                    with self.engine.begin() as c:
                        c.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                except sa.exc.DBAPIError:  # added concurrently by another process
                    pass

    def now(self) -> float:
        """Seconds since the epoch on the database's clock (PostgreSQL), or this machine's (SQLite)."""
        if self.url.startswith("postgresql"):
            with self.engine.connect() as c:
                return float(c.exec_driver_sql("SELECT extract(epoch from clock_timestamp())").scalar())
        return time.time()

    # ------------------------------------------------------------ writing
    def add_runs(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert runs that are not there yet (pending); return how many were new."""
        rows = list(rows)
        if not rows:
            return 0
        with self.engine.begin() as c:
            have = {r for (r,) in c.execute(sa.select(runs.c.run_id).where(runs.c.suite == rows[0]["suite"]))}
            new = [
                dict(
                    r,
                    status=r.get("status", PENDING),
                    attempts=0,
                    factors=canonical_json(r["factors"]),
                    config=canonical_json(r["config"]),
                    error=r.get("error"),
                    code=canonical_json(r["code"]) if r.get("code") is not None else None,
                    params=canonical_json(r["params"]) if r.get("params") is not None else None,
                )
                for r in rows
                if r["run_id"] not in have
            ]
            if new:
                c.execute(self._insert_ignore(), new)
        return len(new)

    def _insert_ignore(self):
        """INSERT that skips rows already there (two workers registering the same runs at once)."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return runs.insert()
        return insert(runs).on_conflict_do_nothing(index_elements=["run_id"])

    def claim(self, run_id: str, worker: str, lease_s: float) -> bool:
        """Atomically take a pending run, or a running one whose heartbeat is stale (``is_stale``). The claim
        records the host and PID of a worker named ``host:pid`` (``worker_name()``)."""
        now = self.now()
        host, pid = split_worker(worker)
        stale = sa.or_(runs.c.heartbeat < now - lease_s, runs.c.heartbeat > now + lease_s)  # as is_stale says
        stmt = (
            runs.update()
            .where(runs.c.run_id == run_id)
            .where(sa.or_(runs.c.status == PENDING, sa.and_(runs.c.status == RUNNING, stale)))
            .values(
                status=RUNNING,
                worker=worker,
                heartbeat=now,
                started=now,
                host=host,
                pid=pid,
                attempts=runs.c.attempts + 1,
            )
        )
        with self.engine.begin() as c:
            return c.execute(stmt).rowcount == 1

    def heartbeat(self, run_id: str, worker: str) -> bool:
        """Refresh the lease; False if another worker has taken the run over."""
        with self.engine.begin() as c:
            return (
                c.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .where(runs.c.worker == worker)
                    .where(runs.c.status == RUNNING)
                    .values(heartbeat=self.now())
                ).rowcount
                == 1
            )

    def finish(
        self,
        run_id: str,
        worker: str,
        status: str,
        *,
        metrics=None,
        curves=None,
        compute=None,
        manifest=None,
        error=None,
    ) -> bool:
        """Record the outcome, only if this worker still holds the run (a stale worker's late result
        is dropped, so a run is never recorded twice)."""
        values = dict(
            status=status,
            finished=time.time(),
            error=error,
            metrics=json.dumps(metrics),
            curves=json.dumps(curves),
            compute=json.dumps(compute),
            manifest=json.dumps(manifest),
        )
        with self.engine.begin() as c:
            return (
                c.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .where(runs.c.worker == worker)
                    .where(runs.c.status == RUNNING)
                    .values(**values)
                ).rowcount
                == 1
            )

    def set_trial(
        self, run_id: str, worker: str, optuna_trial: int, params: dict[str, Any], config: dict[str, Any]
    ) -> bool:
        """Record the Optuna trial a worker asked for a claimed tuning slot (only if it still holds it)."""
        with self.engine.begin() as c:
            return (
                c.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .where(runs.c.worker == worker)
                    .where(runs.c.status == RUNNING)
                    .values(optuna_trial=optuna_trial, params=canonical_json(params), config=canonical_json(config))
                ).rowcount
                == 1
            )

    def set_mlflow_run(self, run_id: str, mlflow_run_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(mlflow_run_id=mlflow_run_id))

    def mark_mirrored(self, run_id: str, mlflow_run_id: str, target: str = "mlflow") -> None:
        """Record that a finished run is completely in MLflow (``target``: the tracking URI), so a later
        sync skips it; a run mirrored to another URI counts as not mirrored there."""
        with self.engine.begin() as c:
            c.execute(
                runs.update().where(runs.c.run_id == run_id).values(mlflow_run_id=mlflow_run_id, mirrored_to=target)
            )

    def forget_mirror(self, target: str) -> int:
        """Mark every run mirrored to ``target`` (a tracking URI) as not mirrored: its database was made anew,
        so the next sync copies them all again. Returns how many."""
        with self.engine.begin() as c:
            return c.execute(runs.update().where(runs.c.mirrored_to == target).values(mirrored_to=None)).rowcount

    def release(self, run_id: str, worker: str) -> None:
        """Give a claimed run back (interrupted before it finished)."""
        with self.engine.begin() as c:
            c.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .where(runs.c.worker == worker)
                .where(runs.c.status == RUNNING)
                .values(status=PENDING, worker=None)
            )

    def release_worker(self, worker: str) -> int:
        """Give back every run a worker holds (the launcher does it for a local worker process that died or
        was killed, so nobody waits for its lease to run out); return how many."""
        with self.engine.begin() as c:
            return c.execute(
                runs.update()
                .where(runs.c.worker == worker)
                .where(runs.c.status == RUNNING)
                .values(status=PENDING, worker=None)
            ).rowcount

    def release_dead(self, suite: str | None = None, host: str | None = None) -> list[str]:
        """Give back at once the running rows claimed on this host (``host``, default this one) by a process
        that no longer exists; return their IDs. A PID reused since is taken as alive: the lease decides."""
        host = host or socket.gethostname()
        q = (
            sa.select(runs.c.run_id, runs.c.worker, runs.c.pid)
            .where(runs.c.status == RUNNING)
            .where(runs.c.host == host)
            .where(runs.c.superseded.is_(None))
        )
        if suite is not None:
            q = q.where(runs.c.suite == suite)
        with self.engine.connect() as c:
            held = list(c.execute(q))
        released = []
        for run_id, worker, pid in held:
            if pid is None or pid == os.getpid() or process_exists(pid):
                continue
            with self.engine.begin() as c:
                if c.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .where(runs.c.worker == worker)
                    .where(runs.c.status == RUNNING)
                    .values(status=PENDING, worker=None)
                ).rowcount:
                    released.append(run_id)
        return released

    def supersede(self, run_ids: Iterable[str]) -> int:
        """Keep the finished rows ``run_ids`` as history (renamed ``<run_id>~g<generation>``, marked
        superseded) and put a pending row of the next generation in their place; return how many."""
        n = 0
        now = time.time()
        for run_id in run_ids:
            with self.engine.begin() as c:
                old = c.execute(
                    sa.select(runs).where(runs.c.run_id == run_id).where(runs.c.status.in_(FINISHED))
                ).first()
                if old is None:
                    continue
                old = dict(old._mapping)
                gen = old.get("generation") or 0
                c.execute(
                    runs.update().where(runs.c.run_id == run_id).values(run_id=f"{run_id}~g{gen}", superseded=now)
                )
                fresh = {
                    k: old[k]
                    for k in (
                        "run_id",
                        "suite",
                        "suite_version",
                        "cell_id",
                        "role",
                        "seed",
                        "trial",
                        "factors",
                        "config",
                        "code",
                    )
                }
                if old["role"] == "evaluation" and old.get("params") is not None:
                    fresh["params"] = old["params"]  # a tuned cell's chosen parameters stay chosen
                c.execute(runs.insert().values(**fresh, status=PENDING, attempts=0, generation=gen + 1))
                n += 1
        return n

    def record_design(self, suite: str, version: int, cell_ids: Iterable[str]) -> None:
        """Remember the cells ``suite`` version ``version`` declares now (replacing what was planned before), so
        that any later reader, with or without the suite file, counts exactly their runs."""
        values = {"cells": canonical_json(sorted(set(cell_ids))), "planned": time.time()}
        with self.engine.begin() as c:
            if not c.execute(
                designs.update()
                .where(designs.c.suite == suite)
                .where(designs.c.suite_version == version)
                .values(**values)
            ).rowcount:
                c.execute(designs.insert().values(suite=suite, suite_version=version, **values))

    def drop_unlisted_seeds(self, suite: str, version: int, seeds: Iterable[int], roles: Iterable[str]) -> int:
        """Delete the never-started runs (``roles``: evaluation and repeat runs) of seeds this suite version no
        longer lists, so a seed list shortened within a version leaves no run pending forever. Nothing computed
        is lost: finished and running rows are kept, and a seed listed again is planned again."""
        with self.engine.begin() as c:
            return c.execute(
                runs.delete()
                .where(runs.c.suite == suite)
                .where(runs.c.suite_version == version)
                .where(runs.c.status == PENDING)
                .where(runs.c.role.in_(list(roles)))
                .where(runs.c.seed.notin_(list(seeds)))
            ).rowcount

    def declared_cells(self, suite: str, version: int) -> set[str] | None:
        """The cell IDs recorded by ``record_design`` for this suite version, or None if none was recorded."""
        with self.engine.connect() as c:
            got = c.execute(
                sa.select(designs.c.cells).where(designs.c.suite == suite).where(designs.c.suite_version == version)
            ).scalar()
        return set(json.loads(got)) if got else None

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        """Delete these rows (``ffbench prune``: runs of superseded cells, named to the user first)."""
        ids = list(run_ids)
        n = 0
        with self.engine.begin() as c:
            for i in range(0, len(ids), 500):
                n += c.execute(runs.delete().where(runs.c.run_id.in_(ids[i : i + 500]))).rowcount
        return n

    # ------------------------------------------------------------ reading
    def rows(self, suite: str | None = None, superseded: bool = False, **where: Any) -> list[RunRow]:
        """Rows matching ``where`` (column = value, or in a list), by run ID; superseded rows only if ``superseded``."""
        q = sa.select(runs)
        if not superseded:
            q = q.where(runs.c.superseded.is_(None))
        if suite is not None:
            q = q.where(runs.c.suite == suite)
        for k, v in where.items():
            q = q.where(runs.c[k].in_(v) if isinstance(v, (list, tuple, set)) else runs.c[k] == v)
        with self.engine.connect() as c:
            return [RunRow.from_record(r._mapping) for r in c.execute(q.order_by(runs.c.run_id))]

    def suites(self) -> list[str]:
        """The names of the suites this store holds runs of, sorted."""
        with self.engine.connect() as c:
            return sorted(r for (r,) in c.execute(sa.select(runs.c.suite).distinct()))

    def unmirrored(self, suite: str, target: str | None = None) -> list[RunRow]:
        """Finished rows of ``suite`` not yet mirrored (to ``target``, a tracking URI, when given)."""
        q = (
            sa.select(runs.c.run_id)
            .where(runs.c.suite == suite)
            .where(runs.c.status.in_(FINISHED))
            .where(runs.c.superseded.is_(None))
        )
        missing = runs.c.mirrored_to.is_(None)
        q = q.where(missing if target is None else sa.or_(missing, runs.c.mirrored_to != target))
        with self.engine.connect() as c:
            ids = [r for (r,) in c.execute(q)]
        return self.rows(suite, run_id=ids) if ids else []

    def states(self, suite: str, suite_version: int | None = None) -> list[dict[str, Any]]:
        """The light columns of a suite's rows (what a worker needs to decide what to claim)."""
        cols = [
            runs.c.run_id,
            runs.c.cell_id,
            runs.c.role,
            runs.c.trial,
            runs.c.seed,
            runs.c.status,
            runs.c.heartbeat,
            runs.c.worker,
            runs.c.attempts,
            runs.c.host,
            runs.c.pid,
        ]
        q = sa.select(*cols).where(runs.c.suite == suite).where(runs.c.superseded.is_(None))
        if suite_version is not None:
            q = q.where(runs.c.suite_version == suite_version)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def status_counts(self, suite: str, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        q = sa.select(runs.c.status, sa.func.count()).where(runs.c.suite == suite).where(runs.c.superseded.is_(None))
        if run_ids is not None:
            q = q.where(runs.c.run_id.in_(list(run_ids)))
        with self.engine.connect() as c:
            return dict(c.execute(q.group_by(runs.c.status)).all())

    def cells(self, suite: str, suite_version: int | None = None) -> dict[str, dict[str, Any]]:
        """cell_id -> {factors, code, finished} of the cells this store holds rows of (the latest finish)."""
        q = sa.select(runs.c.cell_id, runs.c.factors, runs.c.code, runs.c.finished).where(runs.c.suite == suite)
        if suite_version is not None:
            q = q.where(runs.c.suite_version == suite_version)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as c:
            for cell_id, factors, code, finished in c.execute(q):
                cur = out.setdefault(cell_id, {"factors": json.loads(factors), "code": None, "finished": 0.0})
                cur["code"] = cur["code"] or (json.loads(code) if code else None)
                cur["finished"] = max(cur["finished"], finished or 0.0)
        return out

    def frame(self, suite: str | None = None, role: str | None = "evaluation", version: int | None = None):
        """The tidy table: one row per run, factors, metrics and compute flattened into columns
        (tuned parameters as ``param.<name>``; ``batched_seeds``: the seeds a run trained stacked with,
        e.g. '0,1,2', None when it trained alone). ``version``: only rows of that suite version."""
        import pandas as pd

        where: dict[str, Any] = {"role": role} if role else {}
        if version is not None:
            where["suite_version"] = version
        records = []
        for r in self.rows(suite, **where):
            rec = {k: getattr(r, k) for k in _FRAME_COLUMNS}
            rec.update(r.factors)
            rec.update({f"param.{k}": v for k, v in (r.params or {}).items()})
            rec.update(
                {f"cfg.{k}": (canonical_json(v) if isinstance(v, (dict, list)) else v) for k, v in r.config.items()}
            )
            rec.update(r.metrics or {})
            rec.update({k: v for k, v in (r.compute or {}).items() if not isinstance(v, (list, dict))})
            batch = ((r.manifest or {}).get("batched") or {}).get("seeds")  # trained stacked with these seeds
            rec["batched_seeds"] = ",".join(map(str, batch)) if batch else None
            rec["curves"] = r.curves or []
            records.append(rec)
        return pd.DataFrame.from_records(records)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
