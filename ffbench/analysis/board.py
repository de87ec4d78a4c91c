"""``ffbench board DIR…``: one leaderboard page across suites and datasets, as self-contained HTML (sortable
by column), markdown and CSV.

A row is a method on a task (dataset / backbone, with the levels of any axis that is not a method variant)
in one suite: n, failures, mean test accuracy with its 95% interval (``stats.cell_table``), the verdict
against ``bp`` and against the matched ``bp.deepsup`` of the same task (``stats.compare``, one family per
suite and reference: Holm, the ROPE), the budget (epochs, training images), the suite version and code
fingerprint, and the compute cost relative to ``bp``: the ratio of training seconds per epoch to bp's on
the same task, in the same suite and on the same machine only (so boards of different machines compare
cost fairly), between runs executed alike (alone, or batched with the same number of seeds: a batched seed's
time is its share of a stacked step, not its time alone). The machines are footnotes.

Inputs: output folders or stores (every suite a store holds, its latest version, read through
``resultset``: the runs that count), and per-seed CSVs as ``benchmarks/studies/per_seed.py`` writes them
(the committed studies and reproductions; accuracies in %: a column whose values exceed 1 is read as %).
Such a CSV records neither epochs, code nor machine: its cost ratio is of total training time, over runs
taken to share one machine, and the page says so.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis.document import Section, fmt_ci, render
from ffbench.record import resultset
from ffbench.record.manifest import machine

CONTROLS = ("bp", "bp.deepsup")
KEYS = ["suite", "task", "method"]
NOT_RECORDED = "not recorded"


class BoardError(ValueError):
    """An input the board cannot read; the message names it."""


# ---------------------------------------------------------------- reading
def from_store(where: str | Path) -> list[pd.DataFrame]:
    """One tidy frame per suite of a store: its counted runs (``resultset.load``, latest version), method
    variants folded (``resultset.fold_variants``), with task, budget, execution, code and machine."""
    from ffbench.record.export import ExportError, open_store

    try:
        store = open_store(where)
    except ExportError as exc:
        raise BoardError(str(exc)) from None
    out = []
    for suite in store.suites():
        res = resultset.load(store, suite)
        if not len(res.frame):
            continue
        factors: dict[str, None] = {}
        for info in store.cells(suite, res.version).values():
            factors.update(dict.fromkeys(info["factors"]))
        frame, kept = resultset.fold_variants(res.frame, list(factors), "bp")
        rows = {r.run_id: r for r in store.rows(suite, suite_version=res.version, role="evaluation")}
        ident = resultset.identity(list(rows.values())).set_index("run_id")["code_fingerprint"]
        man = {rid: r.manifest or {} for rid, r in rows.items()}
        df = pd.DataFrame(
            {
                "suite": suite,
                "suite_version": res.version,
                "method": frame["method"].astype(str),
                "task": _task(frame, [f for f in kept if f != "method"]),
                "seed": frame["seed"],
                "status": frame["status"],
                "test_acc": pd.to_numeric(frame.get("test_acc"), errors="coerce"),
                "epochs": frame.get("cfg.epochs"),
                "n_train": frame.get("n_train"),
                "epoch_time_s": pd.to_numeric(frame.get("epoch_time_s"), errors="coerce"),
                "executed": [stats.executed(b) for b in frame["batched_seeds"]],
                "code": [(ident.get(r) or "")[:8] or NOT_RECORDED for r in frame["run_id"]],
                "machine": [machine(man[r]) if man[r] else NOT_RECORDED for r in frame["run_id"]],
                "source": str(where),
            }
        )
        out.append(df)
    if not out:
        raise BoardError(f"{where}: the store holds no evaluation runs")
    return out


def from_csv(path: Path) -> pd.DataFrame:
    """A per-seed CSV (``per_seed.py``): its suite is the file's name; accuracies read as % when above 1."""
    df = pd.read_csv(path)
    need = {"method", "dataset", "seed", "status", "test_acc"}
    if not need <= set(df.columns):
        raise BoardError(
            f"{path}: not a per-seed results CSV; it needs the columns {', '.join(sorted(need))} "
            f"(missing: {', '.join(sorted(need - set(df.columns)))})"
        )
    acc = pd.to_numeric(df["test_acc"], errors="coerce")
    if (acc > 1).any():
        acc = acc / 100
    axes = [c for c in df.columns[: list(df.columns).index("seed")] if c not in stats.BASE_FACTORS]  # factors, seed, …
    return pd.DataFrame(
        {
            "suite": path.stem,
            "suite_version": df.get("suite_version"),
            "method": df["method"].astype(str),
            "task": _task(df, ["dataset", "backbone", *axes]),
            "seed": df["seed"],
            "status": df["status"],
            "test_acc": acc,
            "epochs": None,
            "n_train": df.get("n_train"),
            # no epoch count in the CSV: the whole training time, compared between methods of one suite and task
            "epoch_time_s": pd.to_numeric(df.get("train_time_s"), errors="coerce"),
            "executed": NOT_RECORDED,
            "code": NOT_RECORDED,
            "machine": NOT_RECORDED,
            "source": str(path),
        }
    )


def _task(frame: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """'dataset/backbone' plus 'axis=level' of each other factor that applies."""
    out = []
    for rec in frame.to_dict("records"):
        base = [str(rec[f]) for f in ("dataset", "backbone") if f in factors and rec.get(f) is not None]
        rest = [
            f"{f}={_level(rec[f])}"
            for f in factors
            if f not in stats.BASE_FACTORS
            and f in rec
            and rec[f] is not None
            and rec[f] == rec[f]
            and str(rec[f]) != stats.NA
        ]
        out.append("/".join(base) + (" " + " ".join(rest) if rest else ""))
    return out


def _level(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def load(inputs: Sequence[str | Path]) -> pd.DataFrame:
    """Every input's runs in one tidy frame (KEYS, seed, status, test_acc, budget, timing, code, machine)."""
    parts: list[pd.DataFrame] = []
    for item in inputs:
        p = Path(item)
        if p.suffix == ".csv":
            if not p.exists():
                raise BoardError(f"{p}: no such file")
            parts.append(from_csv(p))
        else:
            parts += from_store(item)
    frame = pd.concat(parts, ignore_index=True)
    dup = frame.groupby("suite")["source"].nunique()
    if (dup > 1).any():
        name = dup[dup > 1].index[0]
        raise BoardError(
            f"suite {name!r} comes from several inputs "
            f"({', '.join(sorted(frame.loc[frame['suite'] == name, 'source'].unique()))}): "
            f"`ffbench merge` them into one store first"
        )
    return frame


# ---------------------------------------------------------------- the board
def _verdicts(frame: pd.DataFrame, reference: str) -> dict[tuple, str]:
    """(suite, task, method) -> the verdict against ``reference`` on the same task (one family per suite)."""
    out: dict[tuple, str] = {}
    for suite, g in frame.groupby("suite", sort=False):
        if reference not in set(g["method"]):
            continue
        others = [m for m in g["method"].unique() if m != reference]
        comp = stats.compare(
            g.drop(columns="suite_version"),
            "test_acc",
            control=reference,
            factors=["method", "task"],
            confirmatory=[(m, reference) for m in others],
        )
        for r in comp.to_dict("records") if len(comp) else []:
            out[(suite, r["task"], r["method"])] = (
                f"{r['verdict']} ({fmt_ci(r['delta'], r['dec_low'], r['dec_high'])} pp)"
            )
    return out


def _cost(frame: pd.DataFrame) -> dict[tuple, str]:
    """(suite, task, method) -> its seconds per epoch ÷ bp's, on the same task, suite and machine, between runs
    executed alike; words where no like-for-like pair exists."""
    ok = frame[(frame["status"] == "done") & np.isfinite(frame["epoch_time_s"].astype(float))]
    means = ok.groupby([*KEYS, "machine", "executed"], dropna=False)["epoch_time_s"].mean()
    out: dict[tuple, str] = {}
    for (suite, task, method), g in ok.groupby(KEYS, sort=False):
        if method == "bp":
            out[(suite, task, method)] = "1 (reference)"
            continue
        ratios = []
        for (mach, ex), t in g.groupby(["machine", "executed"])["epoch_time_s"].mean().items():
            ref = means.get((suite, task, "bp", mach, ex))
            if ref is not None and ref > 0:
                ratios.append((t / ref, mach, ex))
        if not ratios:
            has_bp = (frame.loc[frame["suite"] == suite, "method"] == "bp").any()
            out[(suite, task, method)] = "— (no bp run alike)" if has_bp else "no bp in suite"
            continue
        r, _, ex = ratios[0]
        what = ex if ex != NOT_RECORDED else "total time"
        out[(suite, task, method)] = f"×{r:.2f} ({what})" + (f"; {len(ratios)} machines" if len(ratios) > 1 else "")
    return out


def _one(values: pd.Series) -> str:
    vals = sorted({str(v) for v in values if v is not None and v == v})
    return "/".join(vals) if vals else "—"


def board(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, task, method): the raw board (fractions; the verdict and cost in words)."""
    # stats.prepare keeps one suite version of a frame; here each suite has its own
    cells = stats.cell_table(frame.drop(columns="suite_version"), "test_acc", KEYS)
    vs = {ref: _verdicts(frame, ref) for ref in CONTROLS}
    cost = _cost(frame)
    rows = []
    for c in cells.to_dict("records"):
        key = (c["suite"], c["task"], c["method"])
        g = frame[(frame["suite"] == key[0]) & (frame["task"] == key[1]) & (frame["method"] == key[2])]
        rows.append(
            {
                "suite": key[0],
                "task": key[1],
                "method": key[2],
                "n": c["n"],
                "failures": c["failures"],
                "mean": c["mean"],
                "ci_low": c.get("ci_low", math.nan),
                "ci_high": c.get("ci_high", math.nan),
                **{
                    f"vs_{ref}": "control"
                    if key[2] == ref
                    else vs[ref].get(
                        key, "—" if ref in set(frame.loc[frame["suite"] == key[0], "method"]) else f"no {ref} in suite"
                    )
                    for ref in CONTROLS
                },
                "epochs": _one(g["epochs"]),
                "train_images": _one(g["n_train"].map(_level)),
                "suite_version": _one(g["suite_version"].map(_level)),
                "code": _one(g["code"]),
                "cost_vs_bp": cost.get(key, "—"),
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(["suite", "task", "mean"], ascending=[True, True, False]).reset_index(drop=True)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": table["method"],
            "task": table["task"],
            "suite": table["suite"],
            "test acc % [95% CI]": [
                fmt_ci(m, lo, hi) for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"])
            ],
            "n": table["n"],
            "failed": table["failures"],
            "vs bp (Δ pp)": table["vs_bp"],
            "vs bp.deepsup (Δ pp)": table["vs_bp.deepsup"],
            "epochs": table["epochs"],
            "train images": table["train_images"],
            "version": table["suite_version"],
            "code": table["code"],
            "s/epoch ÷ bp": table["cost_vs_bp"],
        }
    )


def footnotes(frame: pd.DataFrame) -> str:
    """The machines each suite's runs were recorded on, and what the cost column compares."""
    lines = []
    for suite, g in frame.groupby("suite", sort=True):
        ms = sorted(set(g["machine"]))
        lines.append(f"- **{suite}**: " + "; ".join(ms))
    return "\n".join(lines)


SORT_JS = """<script>
document.querySelectorAll('.table-wrap table').forEach(t=>{t.querySelectorAll('th').forEach((th,i)=>{
th.style.cursor='pointer';th.title='sort';th.addEventListener('click',()=>{
const b=t.tBodies[0],rows=[...b.rows],dir=th.dataset.dir==='desc'?1:-1;th.dataset.dir=dir<0?'desc':'asc';
const key=r=>{const s=r.cells[i].textContent.replace('×','').replace('−','-').trim(),n=parseFloat(s);
return isNaN(n)?s:n};
rows.sort((a,b)=>{const x=key(a),y=key(b);return (typeof x===typeof y?(x>y)-(x<y):typeof x==='number'?-1:1)*dir});
rows.forEach(r=>b.appendChild(r))})})});
</script>"""


def write(table: pd.DataFrame, frame: pd.DataFrame, dest: Path) -> list[Path]:
    """board.html (sortable), board.md and board.csv under ``dest``."""
    from ffbench.analysis.document import HTML_TEMPLATE

    dest.mkdir(parents=True, exist_ok=True)
    suites = ", ".join(sorted(frame["suite"].unique()))
    sec = Section("Leaderboard").text(
        "Each row: a method on a task in one suite. Verdicts against `bp` and against the same task's `bp.deepsup` "
        "by the project's rule (paired by seed, Holm within each suite, ROPE ±0.5 pp); Δ with its decision "
        "interval. Click a column's head to sort."
    )
    sec.table("board", table, shown(table))
    sec.note(
        "**Cost** is the method's training seconds per epoch ÷ `bp`'s on the same task, in the same suite and "
        "on the same machine only, between runs executed alike ('alone', or 'batched ×N': a batched seed's time "
        "is its share of a stacked step). Where a results CSV records no epochs, machine or execution, "
        "it is the ratio of total training time ('total time') of runs taken to share one machine."
    )
    machines = Section("Machines").text(footnotes(frame))
    page, md = render(
        "ffbench leaderboard",
        f"suites: {suites}",
        [sec, machines],
        kind="board",
        fig_dir="figures",
        template=HTML_TEMPLATE.replace("</body>", SORT_JS + "\n</body>"),
    )
    paths = [dest / "board.html", dest / "board.md", dest / "board.csv"]
    paths[0].write_text(page)
    paths[1].write_text(md)
    table.to_csv(paths[2], index=False)
    return paths


def add_board_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="DIR",
        help="output folders, .db files or URLs (every suite in "
        "them, its latest version), or per-seed CSVs (benchmarks/studies/*.csv)",
    )
    parser.add_argument("--to", default="board", help="folder for board.html, board.md and board.csv")
    return parser


def main_board(args: argparse.Namespace) -> int:
    try:
        frame = load(args.inputs)
    except BoardError as exc:
        print(f"error: ffbench board: {exc}", file=sys.stderr)
        return 2
    table = board(frame)
    for p in write(table, frame, Path(args.to)):
        print(p)
    print(
        f"{len(table)} rows: {frame['suite'].nunique()} suites, {table['task'].nunique()} tasks, "
        f"{table['method'].nunique()} methods"
    )
    return 0
