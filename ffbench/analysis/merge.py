"""``ffbench merge DEST SRC…``: the results stores of one suite run on several machines or folders (workers
without a shared database, a laptop and a cluster, a suite split with ``--cells`` / ``--seeds``) combined
into one store, so that every reader sees one suite.

The rules, checked for every store before anything is written:

- one suite and one suite version: each store's suite and latest version must be those of the first store
  that holds runs (DEST first, when it does); another is refused with a message naming both;
- every run once, by its run ID (run IDs are the full design's, so the parts of a split suite never clash);
- a run's results are its status, final metrics and per-epoch curves, timings aside (a time measures the
  machine, not the method): a run finished in two stores with different results is a conflict, reported with
  both stores' values, and nothing is written (exit 2); with equal results the copy already in DEST (else
  the first source's) stays, so merging the same store twice adds nothing;
- a finished run replaces the same run unfinished elsewhere; a run unfinished everywhere comes in pending,
  for a worker on DEST to train;
- the declared design (``Store.record_design``: whose runs count) must be the same wherever it is recorded,
  else it is refused; which runs count is then ``resultset``'s, as everywhere else (superseded cells stay
  superseded, named in the summary);
- the MLflow bookkeeping of a copied run (which tracking server it was mirrored to) is not copied: after the
  merge MLflow is mirrored from the merged store (``tracking.sync``) unless ``--no-tracking``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ffbench.record import resultset
from ffbench.record.manifest import machine
from ffbench.record.store import FINISHED, PENDING, Store, designs, runs

RESULT_FIELDS = ("status", "metrics", "curves")
_BOOKKEEPING = {"mirrored_to": None, "mlflow_run_id": None}  # they name the source's MLflow, not DEST's


class MergeError(ValueError):
    """Stores that cannot be merged; the message names them and why."""


def timeless(value: Any) -> Any:
    """A run's result with its timings left out (keys ending ``_time_s`` or ``_per_s``)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not (k.endswith("_time_s") or k.endswith("_per_s"))}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def results_of(row: dict[str, Any]) -> dict[str, Any]:
    """What must agree for two copies of a run to be the same run: status, metrics and curves, timings aside."""
    return {
        "status": row["status"],
        **{k: timeless(json.loads(row[k]) if isinstance(row[k], str) else row[k]) for k in RESULT_FIELDS[1:]},
    }


@dataclass
class Source:
    """One store taking part: where it is, its raw rows (by run ID) and its design records."""

    label: str
    store: Store
    suite: str | None = None
    version: int | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    designs: dict[int, str] = field(default_factory=dict)  # suite version -> declared cells (JSON)


@dataclass
class Tally:
    runs: int = 0
    added: int = 0
    updated: int = 0  # finished here, unfinished in DEST so far
    identical: int = 0
    conflicts: int = 0


def dest_location(dest: str) -> tuple[str | Path, Path]:
    """(the store location, the output folder MLflow files go in) of DEST: a folder (its results.db), a
    ``.db`` file, or a SQLAlchemy URL (MLflow files in the current folder)."""
    if "://" in dest:
        return dest, Path(".")
    path = Path(dest)
    if path.suffix == ".db" or path.is_file():
        return path, path.parent
    return path / "results.db", path


def read(label: str, store: Store) -> Source:
    """A store's rows of its one suite (every version, superseded reruns included) and design records."""
    names = store.suites()
    if len(names) > 1:
        raise MergeError(f"{label} holds {len(names)} suites ({', '.join(names)}); a merge combines one suite")
    src = Source(label, store)
    if not names:
        return src
    src.suite = names[0]
    with store.engine.connect() as c:
        got = [dict(r._mapping) for r in c.execute(sa.select(runs).where(runs.c.suite == src.suite))]
        src.designs = {
            int(v): cells
            for v, cells in c.execute(
                sa.select(designs.c.suite_version, designs.c.cells).where(designs.c.suite == src.suite)
            )
        }
    src.rows = {r["run_id"]: r for r in got}
    src.version = max(r["suite_version"] for r in got)
    return src


def _label_of(row: dict[str, Any]) -> str:
    factors = json.loads(row["factors"]) if isinstance(row["factors"], str) else row["factors"]
    return "/".join(str(v) for v in factors.values() if v is not None) + f" seed {row['seed']}"


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The result fields where two copies of a run differ, each as 'field: A vs B'."""
    ra, rb = results_of(a), results_of(b)
    out = []
    if ra["status"] != rb["status"]:
        out.append(f"status {ra['status']} vs {rb['status']}")
    ma, mb = ra["metrics"] or {}, rb["metrics"] or {}
    for k in sorted(set(ma) | set(mb)):
        if ma.get(k) != mb.get(k) and not k.endswith("_bits"):
            out.append(f"{k} {ma.get(k)} vs {mb.get(k)}")
    if ra["curves"] != rb["curves"]:
        out.append(f"curves differ ({len(ra['curves'] or [])} vs {len(rb['curves'] or [])} epochs)")
    return "; ".join(out[:6]) or "per-sample outcomes differ"


def plan(
    dest: Source, sources: Sequence[Source]
) -> tuple[dict[str, dict[str, Any]], dict[int, str], list[Tally], list[str]]:
    """What the merge writes: (run ID -> row to write into DEST, version -> design record to write, a tally
    per source, the conflicts in words). Raises MergeError for another suite, version or design."""
    everyone = [dest, *sources]
    ref = next((s for s in everyone if s.suite is not None), None)
    if ref is None:
        raise MergeError("none of the stores holds any run")
    for s in everyone:
        if s.suite is not None and (s.suite, s.version) != (ref.suite, ref.version):
            raise MergeError(
                f"{s.label} holds suite {s.suite!r} version {s.version}, but {ref.label} holds suite "
                f"{ref.suite!r} version {ref.version}: a merge combines runs of one suite version only"
            )
    records: dict[int, tuple[str, str]] = {}
    for s in everyone:
        for v, cells in s.designs.items():
            if v in records and json.loads(records[v][1]) != json.loads(cells):
                a, b = set(json.loads(records[v][1])), set(json.loads(cells))
                raise MergeError(
                    f"{s.label} and {records[v][0]} declare different designs for {ref.suite!r} version "
                    f"{v} ({len(a ^ b)} cells differ: settings or code changed between them); merge "
                    f"stores planned with the same suite file and code, or bump [suite].version"
                )
            records.setdefault(v, (s.label, cells))
    merged: dict[str, dict[str, Any]] = dict(dest.rows)
    origin = {rid: dest.label for rid in dest.rows}
    writes: dict[str, dict[str, Any]] = {}
    tallies, conflicts = [], []
    for s in sources:
        t = Tally(runs=len(s.rows))
        for rid, row in s.rows.items():
            have = merged.get(rid)
            if have is None:
                new = {**row, **_BOOKKEEPING}
                if row["status"] not in FINISHED:
                    new.update(status=PENDING, worker=None, heartbeat=None, host=None, pid=None)
                merged[rid], origin[rid], writes[rid] = new, s.label, new
                t.added += 1
            elif row["status"] not in FINISHED:
                t.identical += 1  # an unfinished copy adds nothing to the one there
            elif have["status"] not in FINISHED:
                new = {**row, **_BOOKKEEPING}
                merged[rid], origin[rid], writes[rid] = new, s.label, new
                t.updated += 1
            elif results_of(have) == results_of(row):
                t.identical += 1
            else:
                t.conflicts += 1
                conflicts.append(
                    f"run {rid} ({_label_of(row)}): {origin[rid]} and {s.label} differ: "
                    f"{_differences(have, row)}; machines: {machine(_manifest(have))} | "
                    f"{machine(_manifest(row))}"
                )
        tallies.append(t)
    new_records = {v: cells for v, (_, cells) in records.items() if dest.designs.get(v) != cells}
    return writes, new_records, tallies, conflicts


def _manifest(row: dict[str, Any]) -> dict[str, Any]:
    m = row.get("manifest")
    return (json.loads(m) if isinstance(m, str) else m) or {}


def write(store: Store, writes: dict[str, dict[str, Any]], records: dict[int, str], suite: str) -> None:
    """The planned rows and design records into DEST, in one transaction."""
    import time

    with store.engine.begin() as c:
        have = (
            {r for (r,) in c.execute(sa.select(runs.c.run_id).where(runs.c.run_id.in_(list(writes))))}
            if writes
            else set()
        )
        for rid, row in writes.items():
            if rid in have:
                c.execute(runs.update().where(runs.c.run_id == rid).values(**row))
            else:
                c.execute(runs.insert().values(**row))
        for v, cells in records.items():
            values = {"cells": cells, "planned": time.time()}
            if not c.execute(
                designs.update().where(designs.c.suite == suite).where(designs.c.suite_version == v).values(**values)
            ).rowcount:
                c.execute(designs.insert().values(suite=suite, suite_version=v, **values))


def machines(sources: Sequence[Source]) -> list[str]:
    """Per store, the machines its finished runs were recorded on (one line each)."""
    out = []
    for s in sources:
        seen = sorted({machine(_manifest(r)) for r in s.rows.values() if r["status"] in FINISHED and r.get("manifest")})
        out += [f"  {s.label}: {m}" for m in seen]
    return out


def merge(dest: str, sources: Sequence[str], *, tracking: bool = True, tracking_uri: str | None = None) -> int:
    """``ffbench merge``: check every store, then write (or refuse); print the counts. Returns the exit code."""
    from ffbench.record.export import ExportError, open_store

    try:
        srcs = [read(str(p), open_store(p)) for p in sources]
        where, out = dest_location(dest)
        exists = isinstance(where, str) or where.exists()  # a new DEST is made only once the merge can go ahead
        here = read(str(dest), Store(where)) if exists else Source(str(dest), None)  # type: ignore[arg-type]
        if exists and any(s.store.url == here.store.url for s in srcs):
            raise MergeError(f"{dest} is also a source; give DEST once")
        writes, records, tallies, conflicts = plan(here, srcs)
    except (MergeError, ExportError) as exc:
        print(f"error: ffbench merge: {exc}", file=sys.stderr)
        return 2
    suite = next(s.suite for s in (here, *srcs) if s.suite is not None)
    version = next(s.version for s in (here, *srcs) if s.suite is not None)
    print(f"suite {suite!r} version {version}; DEST {dest} held {len(here.rows)} runs")
    print(f"{'source':40s} {'runs':>6s} {'added':>6s} {'updated':>8s} {'identical':>10s} {'conflicts':>10s}")
    for s, t in zip(srcs, tallies):
        print(f"{s.label[-40:]:40s} {t.runs:6d} {t.added:6d} {t.updated:8d} {t.identical:10d} {t.conflicts:10d}")
    print("machines:\n" + "\n".join(machines([here, *srcs]) or ["  (no manifest recorded)"]))
    if conflicts:
        for line in conflicts:
            print(f"conflict: {line}", file=sys.stderr)
        print(
            f"error: {len(conflicts)} run(s) have different results in two stores; nothing was written. Keep one "
            f"copy of each (ffbench prune, or merge without that store), then merge again",
            file=sys.stderr,
        )
        return 2
    store = here.store or Store(where)
    write(store, writes, records, suite)
    res = resultset.load(store, suite, version)
    done = int((res.frame["status"] == "done").sum()) if len(res.frame) else 0
    print(
        f"merged: {len(writes)} run(s) written; {store.url} now holds {len(here.rows) + sum(t.added for t in tallies)} "
        f"runs; the suite's results: {len(res.frame)} runs of {len(res.cells)} cells ({done} done)"
    )
    note = resultset.superseded_note(res.superseded)
    if note:
        print(note[0].upper() + note[1:].replace("`", "") + ".")
    if tracking:
        _mirror(store, suite, version, out, tracking_uri)
    return 0


def _mirror(store: Store, suite_name: str, version: int, out: Path, tracking_uri: str | None) -> None:
    """MLflow from the merged store: ``tracking.sync``, with the cells' aggregates when the suite file of this
    version is at hand (else ``ffbench sync SUITE --out DEST`` writes them once it is)."""
    from ffbench.execution import runner
    from ffbench.plan.design import expand
    from ffbench.plan.suite import SuiteError, load
    from ffbench.record import tracking

    tracker = tracking.Tracker(tracking_uri or tracking.default_tracking_uri(out), runner.Paths(out).artifacts)
    aggregates = None
    try:
        suite = load(suite_name)
        if suite.version == version:
            session = runner.Session(suite, expand(suite), runner.Paths(out), store, tracker, None, 0.0, 0.0)
            aggregates = runner.aggregates(session)
    except SuiteError:
        pass
    mirrored, failed = tracking.sync(store, suite_name, tracker, aggregates=aggregates)
    print(
        f"mirrored {mirrored} run(s) to {tracker.uri}; {failed} failed"
        + ("" if aggregates else f" (cell aggregates: `ffbench sync <suite file> --out {out}`)")
    )


def add_merge_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "dest",
        help="the merged store: an output folder (its results.db, made when missing), a .db file or a SQLAlchemy URL",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SRC", help="stores to merge in: output folders, .db files or URLs"
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not mirror the merged store into MLflow")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: DEST/mlflow.db)")
    return parser


def main_merge(args: argparse.Namespace) -> int:
    return merge(args.dest, args.sources, tracking=not args.no_tracking, tracking_uri=args.tracking_uri)
