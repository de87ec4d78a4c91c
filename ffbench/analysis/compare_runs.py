"""``ffbench compare A B``: two sets of a suite's results side by side, the way a refactor, an upgrade or a
changed setting is checked: two output folders (or stores), or two versions of one suite in one store
(``quick@2 quick@3 --out DIR``).

Each side is the suite's results as every reader reads them (``resultset.load``). Cells are matched by their
factors (method, dataset, backbone, axis levels), not by cell ID, since a changed setting or plugin makes a
new ID. Per cell present on both sides: each side's mean, the difference B − A with its 95% interval (paired
by seed over the seeds both sides ran, ``stats.paired_comparison``; Welch's unpaired interval where no seeds
match), the verdict by the project's rule over the family of matched cells (``stats.decide``: Holm, the
ROPE), and what changed between the sides: the resolved settings (a diff of the run configuration), the code
fingerprint, library versions and the machine (from the run manifests). A cell whose every per-run metric
(timings aside) is equal on both sides is 'identical'.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ffbench import stats
from ffbench.analysis.merge import timeless
from ffbench.core.config import canonical_json, content_hash
from ffbench.record import resultset
from ffbench.record.export import ExportError, open_store
from ffbench.record.manifest import machine
from ffbench.record.store import RunRow

METRIC = "test_acc"
LIBRARIES = ("ffbench", "python", "torch", "numpy", "cuda", "cudnn")
COLUMNS = (
    "dataset",
    "backbone",
    "method",
    "axes",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "delta",
    "ci_low",
    "ci_high",
    "paired",
    "verdict",
    "changed",
)


class CompareError(ValueError):
    """A side that cannot be read; the message names it."""


@dataclass
class Side:
    """One side: where it came from, the suite version, and its counted runs (raw store rows by run ID)."""

    label: str
    suite: str
    version: int
    frame: pd.DataFrame
    rows: dict[str, RunRow]


def _parse(ref: str) -> tuple[str, int | None]:
    name, at, version = ref.rpartition("@")
    if not at:
        return ref, None
    try:
        return name, int(version)
    except ValueError:
        raise CompareError(f"{ref!r}: expected NAME@VERSION with a whole number, e.g. quick@3") from None


def side(ref: str, out: str | None) -> Side:
    """A side from an output folder / store (its one suite, latest version, or ``DIR@N``), or with ``out``
    from ``SUITE@N`` in that folder's store."""
    where, version = _parse(ref)
    name = None
    if out is not None:
        name, where = where, out
    try:
        store = open_store(where)
    except ExportError as exc:
        raise CompareError(str(exc)) from None
    names = store.suites()
    if name is None:
        if len(names) != 1:
            raise CompareError(
                f"{where}: the store holds {len(names)} suites ({', '.join(names) or 'none'}); give "
                "SUITE@VERSION with --out DIR"
            )
        name = names[0]
    elif name not in names:
        raise CompareError(f"suite {name!r} has no runs in {store.url}; suites there: {', '.join(names) or 'none'}")
    res = resultset.load(store, name, version)
    versions = sorted({r.suite_version for r in store.rows(name, role="evaluation")})
    if version is not None and version not in versions:
        raise CompareError(
            f"suite {name!r} has no version {version} in {store.url}; versions: {', '.join(map(str, versions))}"
        )
    rows = {r.run_id: r for r in store.rows(name, suite_version=res.version, role="evaluation")}
    return Side(f"{name}@{res.version} ({where})", name, int(res.version), res.frame, rows)


def _factor_key(row: RunRow) -> str:
    return canonical_json({k: v for k, v in (row.factors or {}).items()})


def _config(row: RunRow) -> dict[str, Any]:
    """The resolved run configuration without the seed, flattened one level (``method_options.lr``)."""
    out = {}
    for k, v in (row.config or {}).items():
        if k == "seed":
            continue
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _first(rows: list[RunRow], f) -> set:
    return {f(r) for r in rows}


def what_changed(ra: list[RunRow], rb: list[RunRow]) -> str:
    """Settings, code fingerprint, library versions and machine that differ between two cells' runs."""
    out = []
    ca, cb = _config(ra[0]), _config(rb[0])
    diff = [f"{k} {ca.get(k, '—')}→{cb.get(k, '—')}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    if diff:
        out.append("settings: " + ", ".join(diff))
    fa = _first(ra, lambda r: resultset.identity([r])["code_fingerprint"][0])
    fb = _first(rb, lambda r: resultset.identity([r])["code_fingerprint"][0])
    if fa != fb:
        mods = sorted(
            {
                k
                for r in ra + rb
                for k in (r.code or {})
                if {content_hash((x.code or {}).get(k)) for x in ra}
                != {content_hash((x.code or {}).get(k)) for x in rb}
            }
        )
        out.append("code: " + (", ".join(mods) if mods else "fingerprint"))
    ma = [r.manifest or {} for r in ra]
    mb = [r.manifest or {} for r in rb]
    libs = [
        f"{k} {'/'.join(sorted({str(m.get(k)) for m in ma}))}→{'/'.join(sorted({str(m.get(k)) for m in mb}))}"
        for k in LIBRARIES
        if {str(m.get(k)) for m in ma} != {str(m.get(k)) for m in mb}
    ]
    if libs:
        out.append("libraries: " + ", ".join(libs))
    if {m.get("git_commit") for m in ma} != {m.get("git_commit") for m in mb}:
        out.append("commit")
    xa, xb = sorted({machine(m) for m in ma}), sorted({machine(m) for m in mb})
    if xa != xb:
        out.append(f"machine: {'; '.join(xa)} → {'; '.join(xb)}")
    da, db = {m.get("device") for m in ma}, {m.get("device") for m in mb}
    if da != db:
        out.append(f"device: {'/'.join(map(str, sorted(da, key=str)))}→{'/'.join(map(str, sorted(db, key=str)))}")
    return "; ".join(out) or "nothing (settings, code, libraries and machine alike)"


def welch(a: np.ndarray, b: np.ndarray, confidence: float = stats.CONFIDENCE) -> tuple[float, float, float]:
    """(mean(b) − mean(a), low, high): Welch's unpaired t interval (NaN bounds below 2 values a side)."""
    d = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return d, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    h = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return d, d - h, d + h


def compare_sides(a: Side, b: Side, metric: str = METRIC, rope=None) -> pd.DataFrame:
    """One row per cell present on both sides (matched by factors): COLUMNS, plus the interval's kind."""

    def cells(s: Side) -> dict[str, list[dict[str, Any]]]:
        ids = set(s.frame["run_id"]) if len(s.frame) else set()
        out: dict[str, list[dict[str, Any]]] = {}
        for rid, r in s.rows.items():
            if rid in ids:
                out.setdefault(_factor_key(r), []).append(r)
        return out

    ca, cb = cells(a), cells(b)
    rows = []
    for key in [k for k in ca if k in cb]:
        ra, rb = ca[key], cb[key]
        factors = ra[0].factors
        va = {r.seed: _value(r, metric) for r in ra}
        vb = {r.seed: _value(r, metric) for r in rb}
        xa = np.array([v for v in va.values() if math.isfinite(v)])
        xb = np.array([v for v in vb.values() if math.isfinite(v)])
        common = sorted(s for s in set(va) & set(vb) if math.isfinite(va[s]) and math.isfinite(vb[s]))
        rope_w = stats.resolve_rope(rope, factors.get("dataset"))
        row = {
            "dataset": factors.get("dataset"),
            "backbone": factors.get("backbone"),
            "method": factors.get("method"),
            "axes": ", ".join(f"{k}={v}" for k, v in factors.items() if k not in stats.BASE_FACTORS and v is not None)
            or "",
            "n_a": len(xa),
            "n_b": len(xb),
            "mean_a": xa.mean() if len(xa) else math.nan,
            "mean_b": xb.mean() if len(xb) else math.nan,
            "rope": rope_w,
        }
        if len(common) >= 2:
            pc = stats.paired_comparison([vb[s] for s in common], [va[s] for s in common], rope=rope_w, effects=False)
            row.update(
                delta=pc["delta"],
                ci_low=pc["ci_low"],
                ci_high=pc["ci_high"],
                paired=f"{len(common)} seeds",
                n_pairs=pc["n_pairs"],
                sd_diff=pc["sd_diff"],
                p_t=pc["p_t"],
                p_equiv=pc["p_equiv"],
                degenerate=pc["degenerate"],
            )
        else:
            d, lo, hi = welch(xa, xb)
            row.update(
                delta=d,
                ci_low=lo,
                ci_high=hi,
                paired="unpaired (Welch)",
                n_pairs=0,
                sd_diff=math.nan,
                p_t=math.nan,
                p_equiv=math.nan,
                degenerate=False,
            )
        row["identical"] = _same_runs(ra, rb)
        row["changed"] = what_changed(ra, rb)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not len(table):
        return table
    dec = stats.family_decisions(table)
    table["verdict"] = np.where(table["identical"], "identical", dec["verdict"])
    table["reason"] = np.where(table["identical"], "every per-run metric is equal", dec["reason"])
    table["dec_low"], table["dec_high"] = dec["dec_low"], dec["dec_high"]
    table.attrs.update(
        a=a.label, b=b.label, only_a=len(set(ca) - set(cb)), only_b=len(set(cb) - set(ca)), metric=metric
    )
    return table.sort_values(["dataset", "backbone", "method", "axes"], key=lambda c: c.astype(str)).reset_index(
        drop=True
    )


def _value(row: RunRow, metric: str) -> float:
    v = (row.metrics or {}).get(metric) if row.status == "done" else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _same_runs(ra: list[RunRow], rb: list[RunRow]) -> bool:
    """Every seed on both sides, with the same status and every final metric equal (timings aside)."""
    a = {r.seed: (r.status, timeless(r.metrics or {})) for r in ra}
    b = {r.seed: (r.status, timeless(r.metrics or {})) for r in rb}
    return a == b


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: accuracies and their difference in % / pp."""
    from ffbench.analysis.document import fmt_ci, fmt_num

    return pd.DataFrame(
        {
            "dataset": table["dataset"],
            "backbone": table["backbone"],
            "method": table["method"],
            "axes": table["axes"],
            "n A/B": [f"{a}/{b}" for a, b in zip(table["n_a"], table["n_b"])],
            "mean A %": [fmt_num(v, 2, 100) for v in table["mean_a"]],
            "mean B %": [fmt_num(v, 2, 100) for v in table["mean_b"]],
            "Δ B−A pp [95% CI]": [
                fmt_ci(d, lo, hi) for d, lo, hi in zip(table["delta"], table["ci_low"], table["ci_high"])
            ],
            "paired": table["paired"],
            "verdict": table["verdict"],
            "what changed": table["changed"],
        }
    )


def plain(df: pd.DataFrame) -> str:
    """A plain text table (columns padded), for the terminal."""
    cols = [str(c) for c in df.columns]
    cells = [[str(v) for v in row] for row in df.itertuples(index=False)]
    width = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, width)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in width])] + [line(r) for r in cells])


def header(a: Side, b: Side) -> list[str]:
    """Each side in one line: suite version, runs, machines, library versions."""
    out = []
    for tag, s in (("A", a), ("B", b)):
        ms = [r.get("manifest") or {} for r in s.rows.values() if r.get("manifest")]
        libs = ", ".join(
            f"{k} {'/'.join(sorted({str(m.get(k)) for m in ms if m.get(k) is not None}))}"
            for k in LIBRARIES
            if any(m.get(k) is not None for m in ms)
        )
        out.append(
            f"{tag}: {s.label}: {len(s.frame)} runs; machine: {'; '.join(sorted({machine(m) for m in ms})) or '?'}"
            f"; {libs}"
        )
    return out


def write_to(table: pd.DataFrame, dest: str) -> Path:
    """``--to FILE``: CSV (every column, fractions) for .csv, a markdown table (as printed) for .md."""
    from ffbench.analysis.document import _md_table

    path = Path(dest)
    if path.suffix not in (".csv", ".md"):
        raise CompareError(f"--to {dest}: allowed endings are .csv and .md")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        path.write_text(f"# {table.attrs['a']} vs {table.attrs['b']}\n\n{_md_table(shown(table))}\n")
    return path


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "a",
        metavar="A",
        help="an output folder, .db file or URL (its suite's latest version; DIR@N "
        "for version N), or SUITE@N with --out",
    )
    parser.add_argument("b", metavar="B", help="the same for the other side")
    parser.add_argument("--out", help="the output folder whose store holds both SUITE@N sides")
    parser.add_argument("--to", help="also write the table to FILE (.csv: every column; .md: as printed)")
    parser.add_argument("--rope-pp", type=float, help="ROPE half-width in percentage points (default: 0.5)")
    return parser


def main_compare(args: argparse.Namespace) -> int:
    try:
        a, b = side(args.a, args.out), side(args.b, args.out)
        if a.suite != b.suite:
            print(f"note: comparing suite {a.suite!r} with suite {b.suite!r}: cells are matched by their factors")
        table = compare_sides(a, b, rope=None if args.rope_pp is None else args.rope_pp / 100)
        for line in header(a, b):
            print(line)
        if not len(table):
            print("no cell is present on both sides (cells are matched by method, dataset, backbone and axis levels)")
            return 0
        print(plain(shown(table)))
        counts = table["verdict"].value_counts()
        print(
            f"{len(table)} cells on both sides ({', '.join(f'{n} {v}' for v, n in counts.items())}); "
            f"{table.attrs['only_a']} only in A, {table.attrs['only_b']} only in B; Δ = B − A, verdict by the "
            f"project's rule (Holm over these cells, ROPE ±{table['rope'].iloc[0] * 100:g} pp)"
        )
        if args.to:
            print(f"written: {write_to(table, args.to)}")
    except CompareError as exc:
        print(f"error: ffbench compare: {exc}", file=sys.stderr)
        return 2
    return 0
