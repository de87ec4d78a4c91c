"""Getting a suite's results out of the store as tidy tables, for pandas or any tool that reads CSV or
Parquet.

``load(out_dir_or_store, suite)`` returns three DataFrames:

- ``runs``: one row per run: identifiers (``cell_id``, ``config_hash``, ``code_fingerprint``,
  ``suite_version``, ``superseded``), factors (method, dataset, backbone, axes), the resolved
  configuration (``cfg.*``), tuned parameters (``param.*``), final metrics and compute;
- ``curves``: one row per run × epoch × metric (tidy: columns ``metric`` and ``value``), every per-epoch
  series except the per-unit ones;
- ``units``: one row per run × epoch × unit, with that unit's accuracy on each split as columns
  (``val_acc``, ``test_acc``).

Accuracies are fractions (0-1), as in the store and ``results.csv``; ``percent=True`` gives them in % (as
the reports show them). Only accuracy columns are scaled: losses, times and counts never are.
``main_export`` and ``add_export_arguments`` are the ``ffbench export`` command.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ffbench.core.paths import inside
from ffbench.record import resultset

TABLES = ("runs", "curves", "units")
FORMATS = ("csv", "parquet")
ROLES = ("evaluation", "tuning", "all")
ID_COLUMNS = (
    "run_id",
    "suite",
    "suite_version",
    "cell_id",
    "config_hash",
    "code_fingerprint",
    "superseded",
    "role",
    "seed",
    "trial",
    "status",
)
_ACCURACY = re.compile(r"(?:^|_)acc(?:$|\.)")  # val_acc, test_acc.softmax, best_val_acc, val_acc.unit3
_UNIT = re.compile(r"^(?P<split>[a-z]+)_acc\.unit(?P<unit>\d+)$")


class ExportError(ValueError):
    """Bad input to an export: the message names what to change."""


def is_accuracy(column: str) -> bool:
    """Whether a metric column holds an accuracy (a fraction in the store)."""
    return bool(_ACCURACY.search(str(column)))


def open_store(out_dir_or_store: Any):
    """A Store from a Store, an output directory holding ``results.db``, a ``.db`` file or a SQLAlchemy URL."""
    from ffbench.record.store import Store

    if hasattr(out_dir_or_store, "frame"):
        return out_dir_or_store
    text = str(out_dir_or_store)
    if "://" in text:
        return Store(text)
    path = Path(text)
    if path.is_dir():
        path = path / "results.db"
    if not path.exists():
        raise ExportError(
            f"no results store at {path}: give the suite's output directory (--out DIR, the folder "
            "that holds results.db) or the store (--store PATH or URL)"
        )
    return Store(path)


def _suite(store, suite: str | None) -> str:
    names = store.suites()
    if suite is None:
        if len(names) == 1:
            return names[0]
        raise ExportError(
            f"the store {store.url} holds {len(names)} suites: name one of {', '.join(names) or '(none)'}"
        )
    if suite not in names:
        raise ExportError(f"suite {suite!r} has no runs in {store.url}; suites there: {', '.join(names) or 'none'}")
    return suite


def load(
    out_dir_or_store: Any,
    suite: str | None = None,
    *,
    role: str = "evaluation",
    suite_version: int | str | None = None,
    percent: bool = False,
    include_superseded: bool = False,
) -> dict[str, pd.DataFrame]:
    """The tables ``runs``, ``curves`` and ``units`` of one suite (the store's only suite when ``suite`` is
    None): the suite's results (``resultset``: the runs of the cells its current design declares).
    ``role``: 'evaluation' (the runs the reports use), 'tuning' or 'all'. ``suite_version``: the latest when
    None, a number, or 'all'. ``percent``: accuracies in % instead of fractions. ``include_superseded``: also
    the runs of superseded cells (settings or code changed since), flagged in the column ``superseded``."""
    if role not in ROLES:
        raise ExportError(f"role {role!r}: allowed values are {', '.join(ROLES)}")
    store = open_store(out_dir_or_store)
    name = _suite(store, suite)
    every = store.frame(name, role=None if role == "all" else role)
    if not len(every):
        raise ExportError(f"suite {name!r} has no {role} runs in {store.url}")
    versions = sorted(int(v) for v in every["suite_version"].unique())
    if suite_version not in (None, "all") and int(suite_version) not in versions:
        raise ExportError(f"suite {name!r} has no version {suite_version}; versions: {', '.join(map(str, versions))}")
    wanted = versions if suite_version == "all" else [versions[-1] if suite_version is None else int(suite_version)]
    parts, left_out = [], []
    for v in wanted:
        res = resultset.load(store, name, v, None if role == "all" else role, include_superseded=True)
        parts.append(res.frame if include_superseded else res.frame[~res.frame["superseded"]])
        left_out.append(res.superseded)
    frame = pd.concat(parts, ignore_index=True)
    if include_superseded:  # the statistics' labels aside: an export keeps each run's own method name
        frame["method"] = frame["run_id"].map(dict(zip(every["run_id"], every["method"])))
    ids = resultset.identity(store.rows(name))
    frame = frame.merge(ids, on="run_id", how="left")
    factors = _factors(store, name)
    keys = [c for c in (*ID_COLUMNS, *factors) if c in frame]
    runs = frame.drop(columns=["curves"])
    runs = runs[keys + [c for c in runs.columns if c not in keys]]
    curves, units = _long(frame, keys)
    tables = {"runs": runs, "curves": curves, "units": units}
    tables = {k: _to_percent(k, t) for k, t in tables.items()} if percent else tables
    gone = pd.concat(left_out, ignore_index=True)
    tables["runs"].attrs["superseded_note"] = resultset.superseded_note(gone, include_superseded)
    return tables


def _factors(store, suite: str) -> list[str]:
    """The factor names the rows were stored with: method, dataset, backbone first, then the axes."""
    names: dict[str, None] = {}
    for r in store.rows(suite, role="evaluation") or store.rows(suite):
        names.update(dict.fromkeys(r.factors or {}))
    base = [f for f in ("method", "dataset", "backbone") if f in names]
    return base + [f for f in names if f not in base]


def _long(frame: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-epoch curves unrolled: (run × epoch × metric, run × epoch × unit)."""
    curve_rows, unit_rows = [], {}
    for rec in frame.to_dict("records"):
        ident = {k: rec.get(k) for k in keys}
        for row in rec.get("curves") or []:
            epoch = row.get("epoch")
            for metric, value in row.items():
                if metric == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                m = _UNIT.match(metric)
                if m:
                    key = (rec["run_id"], epoch, int(m["unit"]))
                    unit_rows.setdefault(key, {**ident, "epoch": epoch, "unit": int(m["unit"])})[
                        f"{m['split']}_acc"
                    ] = value
                else:
                    curve_rows.append({**ident, "epoch": epoch, "metric": metric, "value": float(value)})
    curves = pd.DataFrame(curve_rows, columns=[*keys, "epoch", "metric", "value"])
    units = pd.DataFrame(list(unit_rows.values()))
    if not len(units):
        units = pd.DataFrame(columns=[*keys, "epoch", "unit", "val_acc", "test_acc"])
    return curves, units


def _to_percent(name: str, table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    if name == "curves":
        acc = t["metric"].map(is_accuracy).astype(bool)
        t.loc[acc, "value"] = t.loc[acc, "value"] * 100.0
        return t
    for c in t.columns:
        if is_accuracy(c) and pd.api.types.is_numeric_dtype(t[c]):
            t[c] = t[c] * 100.0
    return t


def write(tables: dict[str, pd.DataFrame], dest: str | Path, fmt: str = "csv") -> list[Path]:
    """Write each table as ``dest/<name>.<fmt>``; returns the paths."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r}: allowed values are {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ExportError(
            "--format parquet needs the Python package 'pyarrow', which is not installed "
            "(pip install pyarrow), or use --format csv"
        )
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"--to {dest}: a file is there; give a folder")
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        p = inside(dest, f"{name}.{fmt}")
        if fmt == "csv":
            table.to_csv(p, index=False)
        else:
            _parquet_safe(table).to_parquet(p, index=False)
        paths.append(p)
    return paths


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: a column mixing types (an axis with numbers and '-') becomes text."""
    t = table.copy()
    for c in t.columns:
        if t[c].dtype == object:
            types = {type(v) for v in t[c] if v is not None and v == v}
            if len(types) > 1:
                t[c] = [None if v is None or v != v else str(v) for v in t[c]]
    return t


# ---------------------------------------------------------------- the command
def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``ffbench export SUITE --out DIR --format csv|parquet --to DEST``."""
    parser.add_argument(
        "suite", nargs="?", help="suite name (as stored) or suite file; optional when the store holds one suite"
    )
    parser.add_argument("--out", help="output directory of the suite (holds results.db); default ffbench-out/SUITE")
    parser.add_argument("--store", help="results store location or SQLAlchemy URL (default OUT/results.db)")
    parser.add_argument("--format", default="csv", choices=FORMATS, help="file format (default csv)")
    parser.add_argument("--to", help="folder to write runs, curves and units into (default OUT/export)")
    parser.add_argument(
        "--role",
        default="evaluation",
        choices=ROLES,
        help="which runs: evaluation (default; what the reports use), tuning or all",
    )
    parser.add_argument("--suite-version", help="suite version (default: the latest; 'all' for every version)")
    parser.add_argument("--percent", action="store_true", help="accuracies in %% (default: fractions, 0-1)")
    parser.add_argument(
        "--include-superseded",
        action="store_true",
        help="also the runs of superseded cells (settings or code changed since), flagged in the column 'superseded'",
    )
    return parser


def main_export(args: argparse.Namespace) -> int:
    """``ffbench export``: write the suite's tables; a clear message and exit 2 on bad input."""
    name = args.suite
    if name and name.endswith(".toml"):
        try:
            from ffbench.plan.suite import load as load_suite

            name = load_suite(name).name
        except Exception as exc:  # the file is named but unreadable: say so, no traceback
            print(f"error: suite file {args.suite}: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else (Path("ffbench-out") / name if name else None)
    if out is None and not args.store:
        print("error: ffbench export: give a SUITE, --out DIR or --store", file=sys.stderr)
        return 2
    version = args.suite_version
    if version not in (None, "all"):
        try:
            version = int(version)
        except ValueError:
            print(f"error: --suite-version {version!r}: a number or 'all'", file=sys.stderr)
            return 2
    try:
        tables = load(
            args.store or out,
            name,
            role=args.role,
            suite_version=version,
            percent=args.percent,
            include_superseded=args.include_superseded,
        )
        dest = Path(args.to) if args.to else (out or Path(".")) / "export"
        paths = write(tables, dest, args.format)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p, df in zip(paths, tables.values()):
        print(f"{p}  ({len(df)} rows)")
    note = tables["runs"].attrs.get("superseded_note")
    if note:
        print(note[0].upper() + note[1:].replace("`", "") + ".")
    unit = "%" if args.percent else "fractions (0-1)"
    print(f"accuracies in {unit}; load them with pandas.read_{args.format}(...) or ffbench.record.export.load(...)")
    return 0
