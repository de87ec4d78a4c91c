"""``ffbench prune``: delete the runs of superseded cells, the cells a suite version's current design no
longer declares (``resultset``: settings or code changed since), from the results store and their mirror in
MLflow. It names what it deletes and deletes only with ``--yes``; the current cells' runs and other suite
versions are never touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ffbench.record import resultset


def superseded_rows(store: Any, suite: str) -> list[dict[str, Any]]:
    """Every row (any role) of ``suite`` whose cell its version's current design no longer declares."""
    rows = store.rows(suite)
    current = {v: resultset.declared_cells(store, suite, v) for v in {r["suite_version"] for r in rows}}
    return [r for r in rows if r["cell_id"] not in current[r["suite_version"]]]


def add_prune_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "suite", nargs="?", help="a suite file or name, or the name of a suite stored under ffbench-out/<name>"
    )
    parser.add_argument("--out", help="the suite's output directory (holds results.db); default ffbench-out/SUITE")
    parser.add_argument("--store", help="results store location or SQLAlchemy URL (default OUT/results.db)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db when it exists)")
    parser.add_argument("--yes", action="store_true", help="delete them (without it: only list what would go)")
    return parser


def main_prune(args: argparse.Namespace) -> int:
    from ffbench.analysis.report_context import open_store
    from ffbench.cli.locate import locate

    if not args.suite and not args.out:
        print("error: ffbench prune: give a SUITE or --out DIR", file=sys.stderr)
        return 2
    name, out, _ = locate(args.suite, args.out)
    try:
        store = open_store(Path(out), args.store)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = superseded_rows(store, name)
    if not rows:
        print(f"{name}: no superseded cells; nothing to delete")
        return 0
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        cells.setdefault(r["cell_id"], {"factors": r["factors"], "version": r["suite_version"], "runs": 0})["runs"] += 1
    from ffbench.plan.design import run_name

    print(
        f"{name}: {len(rows)} run{'s' * (len(rows) != 1)} of {len(cells)} superseded cell"
        f"{'s' * (len(cells) != 1)} (settings or code changed since):"
    )
    for cid, c in sorted(cells.items(), key=lambda kv: (kv[1]["version"], run_name(kv[1]["factors"]))):
        print(f"  {cid}  {run_name(c['factors'])}  version {c['version']}: {c['runs']} run{'s' * (c['runs'] != 1)}")
    if not args.yes:
        print(f"nothing deleted; `ffbench prune {name} --yes` deletes them from {store.url} and from MLflow")
        return 0
    deleted = store.delete_runs(r["run_id"] for r in rows)
    print(f"deleted {deleted} run{'s' * (deleted != 1)} from {store.url}")
    db = Path(out) / "mlflow.db"
    uri = args.tracking_uri or (f"sqlite:///{db.resolve()}" if db.exists() else None)
    if uri is not None:
        from ffbench.execution.runner import Paths
        from ffbench.record.tracking import Tracker

        tracker = Tracker(uri, Paths(Path(out)).artifacts)
        tracker.init_experiment(name)
        n = tracker.delete_cells(cells)
        print(
            f"deleted {n} MLflow run{'s' * (n != 1)} of those cells (parents and children) from {uri}"
            + (f"; MLflow unavailable: {tracker.degraded}" if tracker.degraded else "")
        )
        if tracker.degraded:
            return 1
    return 0
