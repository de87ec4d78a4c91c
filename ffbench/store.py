"""The results store: the source of truth. One row per run, appended and updated, never deleted.

SQLite under the output directory on one machine; any SQLAlchemy URL (PostgreSQL) for several.
Claiming a run is one atomic conditional UPDATE, so many workers can share a suite: a run is taken
when it is pending, or when it is running but its worker's heartbeat is older than the lease.
Rows are evaluation runs and tuning trial slots (role 'tuning', ``trial`` = slot number 0..n-1,
``optuna_trial`` = the Optuna trial number, ``params`` = the sampled parameters; an evaluation row of a
tuned cell carries the chosen parameters in ``params``). Statuses: pending, running, done, failed,
pruned (tuning trials stopped by the pruner). Lease times use the database's clock on PostgreSQL, so
machines with skewed clocks still agree on what is stale.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from ffbench.config import canonical_json

PENDING, RUNNING, DONE, FAILED, PRUNED = "pending", "running", "done", "failed", "pruned"
FINISHED = (DONE, FAILED, PRUNED)

_meta = sa.MetaData()
runs = sa.Table(
    "runs", _meta,
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
)
_ADDED_COLUMNS = {"params": "TEXT", "optuna_trial": "INTEGER"}  # added to stores created before them
_JSON = ("factors", "config", "metrics", "curves", "compute", "manifest", "params")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _url(location: str | Path) -> str:
    s = str(location)
    if "://" in s:
        return s
    path = Path(s).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Store:
    def __init__(self, location: str | Path):
        self.url = _url(location)
        kwargs: dict[str, Any] = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(self.url, **kwargs)
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
        self.dialect = self.engine.dialect.name

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
            have = {r for (r,) in c.execute(sa.select(runs.c.run_id).where(
                runs.c.suite == rows[0]["suite"]))}
            new = [dict(r, status=r.get("status", PENDING), attempts=0, factors=canonical_json(r["factors"]),
                        config=canonical_json(r["config"]), error=r.get("error"),
                        params=canonical_json(r["params"]) if r.get("params") is not None else None)
                   for r in rows if r["run_id"] not in have]
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
        """Atomically take a pending run, or a running one whose heartbeat is stale."""
        now = self.now()
        stmt = (runs.update()
                .where(runs.c.run_id == run_id)
                .where(sa.or_(runs.c.status == PENDING,
                              sa.and_(runs.c.status == RUNNING, runs.c.heartbeat < now - lease_s)))
                .values(status=RUNNING, worker=worker, heartbeat=now, started=now,
                        attempts=runs.c.attempts + 1))
        with self.engine.begin() as c:
            return c.execute(stmt).rowcount == 1

    def heartbeat(self, run_id: str, worker: str) -> bool:
        """Refresh the lease; False if another worker has taken the run over."""
        with self.engine.begin() as c:
            return c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.worker == worker)
                             .where(runs.c.status == RUNNING).values(heartbeat=self.now())).rowcount == 1

    def finish(self, run_id: str, worker: str, status: str, *, metrics=None, curves=None, compute=None,
               manifest=None, error=None) -> bool:
        """Record the outcome, only if this worker still holds the run (a stale worker's late result
        is dropped, so a run is never recorded twice)."""
        values = dict(status=status, finished=time.time(), error=error,
                      metrics=json.dumps(metrics), curves=json.dumps(curves), compute=json.dumps(compute),
                      manifest=json.dumps(manifest))
        with self.engine.begin() as c:
            return c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.worker == worker)
                             .where(runs.c.status == RUNNING).values(**values)).rowcount == 1

    def set_trial(self, run_id: str, worker: str, optuna_trial: int, params: dict[str, Any],
                  config: dict[str, Any]) -> bool:
        """Record the Optuna trial a worker asked for a claimed tuning slot (only if it still holds it)."""
        with self.engine.begin() as c:
            return c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.worker == worker)
                             .where(runs.c.status == RUNNING)
                             .values(optuna_trial=optuna_trial, params=canonical_json(params),
                                     config=canonical_json(config))).rowcount == 1

    def set_mlflow_run(self, run_id: str, mlflow_run_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(mlflow_run_id=mlflow_run_id))

    def release(self, run_id: str, worker: str) -> None:
        """Give a claimed run back (interrupted before it finished)."""
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.worker == worker)
                      .where(runs.c.status == RUNNING).values(status=PENDING, worker=None))

    def release_worker(self, worker: str) -> int:
        """Give back every run a worker holds (the launcher does it for a local worker process that died or
        was killed, so nobody waits for its lease to run out); return how many."""
        with self.engine.begin() as c:
            return c.execute(runs.update().where(runs.c.worker == worker).where(runs.c.status == RUNNING)
                             .values(status=PENDING, worker=None)).rowcount

    # ------------------------------------------------------------ reading
    def rows(self, suite: str | None = None, **where: Any) -> list[dict[str, Any]]:
        q = sa.select(runs)
        if suite is not None:
            q = q.where(runs.c.suite == suite)
        for k, v in where.items():
            q = q.where(runs.c[k].in_(v) if isinstance(v, (list, tuple, set)) else runs.c[k] == v)
        with self.engine.connect() as c:
            out = [dict(r._mapping) for r in c.execute(q.order_by(runs.c.run_id))]
        for r in out:
            for k in _JSON:
                r[k] = json.loads(r[k]) if r[k] else None
        return out

    def states(self, suite: str, suite_version: int | None = None) -> list[dict[str, Any]]:
        """The light columns of a suite's rows (what a worker needs to decide what to claim)."""
        cols = [runs.c.run_id, runs.c.cell_id, runs.c.role, runs.c.trial, runs.c.seed, runs.c.status,
                runs.c.heartbeat, runs.c.worker, runs.c.attempts]
        q = sa.select(*cols).where(runs.c.suite == suite)
        if suite_version is not None:
            q = q.where(runs.c.suite_version == suite_version)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def status_counts(self, suite: str, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        q = sa.select(runs.c.status, sa.func.count()).where(runs.c.suite == suite)
        if run_ids is not None:
            q = q.where(runs.c.run_id.in_(list(run_ids)))
        with self.engine.connect() as c:
            return dict(c.execute(q.group_by(runs.c.status)).all())

    def frame(self, suite: str | None = None, role: str | None = "evaluation", version: int | None = None):
        """The tidy table: one row per run, factors, metrics and compute flattened into columns
        (tuned parameters as ``param.<name>``). ``version``: only rows of that suite version."""
        import pandas as pd

        where: dict[str, Any] = {"role": role} if role else {}
        if version is not None:
            where["suite_version"] = version
        records = []
        for r in self.rows(suite, **where):
            rec = {k: r[k] for k in ("run_id", "suite", "suite_version", "cell_id", "role", "seed", "trial",
                                     "status", "error", "attempts", "mlflow_run_id", "optuna_trial")}
            rec.update(r["factors"])
            rec.update({f"param.{k}": v for k, v in (r["params"] or {}).items()})
            rec.update({f"cfg.{k}": (canonical_json(v) if isinstance(v, (dict, list)) else v)
                        for k, v in r["config"].items()})
            rec.update(r["metrics"] or {})
            rec.update({k: v for k, v in (r["compute"] or {}).items() if not isinstance(v, (list, dict))})
            rec["curves"] = r["curves"] or []
            records.append(rec)
        return pd.DataFrame.from_records(records)
