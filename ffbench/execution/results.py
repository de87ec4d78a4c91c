"""A suite's results read back from the store for the end of a run and for MLflow: the results table
(mean ± SD per cell), the failed runs, the tuning budget curves, and each cell's aggregate for its parent
run. Every number comes from ``stats`` (``cell_table``, ``cell_summaries``, ``budget_curves``, the same
functions the reports read); this module only selects the rows (``resultset``: the runs of this suite
version's current cells, of this design's part), passes the design's factors explicitly (method-only axes
folded into method variants), and names the columns.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ffbench import stats
from ffbench.core.config import TABLE_COLUMNS
from ffbench.execution.selection import choose_best
from ffbench.plan.design import EVALUATION, TUNING, Design
from ffbench.plan.suite import Suite
from ffbench.plan.tuning import METRIC as TUNING_METRIC
from ffbench.record import resultset
from ffbench.record.store import DONE, FAILED, FINISHED, PRUNED, RunRow, Store

METRIC = "test_acc"
NOT_APPLICABLE = "—"  # the level shown in the results table where an axis does not apply to a method
COMPUTE = ("epoch_time_s", "saved_bytes_per_step", "peak_mem_bytes")


# ---------------------------------------------------------------- the end-of-run table
def results_table(store: Store, suite: Suite, design: Design) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean ± SD of test accuracy per cell (dataset, backbone, method and axis levels) with its 95% interval,
    and each cell's verdict against the suite's control with the interval of the difference (both from
    ``stats.cell_summaries``), over the finished evaluation runs of this suite version; tuning trials never
    enter it. Returns (table, the evaluation frame it was computed from, for results.csv)."""
    frame = resultset.load(store, suite.name, suite.version).frame
    if len(frame):
        frame = frame[frame["cell_id"].isin({c.cell_id for c in design.cells})].copy()
    if not len(frame):
        return pd.DataFrame(), frame
    frame, factors = resultset.fold_variants(frame, design.factors, suite.control)
    summaries = stats.cell_summaries(frame, control=suite.control, factors=factors)
    axes = [a for a in factors if a in design.axes and a in frame.columns]
    keys = ["dataset", "backbone", "method", *axes]
    for a in axes:  # None (the axis does not apply) stays a group of its own
        frame[a] = frame[a].map(lambda v: NOT_APPLICABLE if v is None or (isinstance(v, float) and v != v) else v)
    cells = stats.cell_table(frame, METRIC, keys)
    compute = _compute(frame, keys, cells)
    cell_of = {tuple(map(str, k)): c for k, c in zip(frame[keys].itertuples(index=False), frame["cell_id"])}
    per = [summaries.get(cell_of.get(tuple(map(str, k)), ""), {}) for k in cells[keys].itertuples(index=False)]
    table = pd.DataFrame(
        {
            **{k: cells[k] for k in keys},
            "n": cells["n"],
            "failed": cells["failures"],
            "test_acc_mean": cells["mean"] * 100,
            "test_acc_sd": cells["sd"] * 100,
            "test_acc_ci_low": cells["ci_low"] * 100,
            "test_acc_ci_high": cells["ci_high"] * 100,
            **{
                f"{k}_vs_control": [s.get(k, math.nan) * 100 for s in per]
                for k in ("delta", "delta_ci_low", "delta_ci_high")
            },
            "verdict": [s.get("verdict", "") for s in per],
            "one_seed": [s.get("one_seed", "") for s in per],
            **compute,
        }
    )
    table.attrs["control"] = suite.control
    order = {
        "dataset": suite.datasets,
        "backbone": suite.backbones,
        "method": suite.methods,
        **{a.name: [NOT_APPLICABLE] + list(a.levels) for a in suite.axes},
    }

    def rank(col):  # the suite's own order, not the store's (a method's variants after it)
        pos = {str(v): i for i, v in enumerate(order[col.name])}
        return col.map(lambda v: (pos.get(str(v).split("[")[0], len(pos)), str(v)))

    return table.sort_values(keys, key=rank).reset_index(drop=True), frame


def _compute(frame: pd.DataFrame, keys: list[str], cells: pd.DataFrame) -> dict[str, list]:
    """Per cell of ``cells``: how its runs were executed ('alone', 'batched ×3', or both), s/epoch (of the
    runs alone where there are any, else the per-seed share of the batched step; never the two mixed),
    activations saved for backward in MB/step (NaN, and ``no_backward`` True: the method has no backward
    pass, its 0 saved bytes say nothing of its memory), and peak GPU MB/step only where
    some run measured one (CUDA). From ``stats.compute_table``."""
    comp = stats.compute_table(frame, COMPUTE, keys)
    modes: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in comp.to_dict("records"):
        fig = modes.setdefault(tuple(map(str, (r[k] for k in keys))), {}).setdefault(r["executed"], {})
        fig[r["quantity"]] = r["mean"]
        fig["no_backward"] = fig.get("no_backward", 0) + r["no_backward"]
    out: dict[str, list] = {
        "executed": [],
        "epoch_time_s": [],
        "saved_MB_per_step": [],
        "no_backward": [],
        "peak_MB_per_step": [],
    }
    for k in cells[keys].itertuples(index=False):
        m = modes.get(tuple(map(str, k)), {})
        timed = "alone" if "alone" in m else next(iter(sorted(m)), None)  # like for like: one execution's figures
        fig = m.get(timed, {})
        out["executed"].append(" + ".join(sorted(m)) or "—")
        out["epoch_time_s"].append(fig.get("epoch_time_s", math.nan))
        out["saved_MB_per_step"].append(fig.get("saved_bytes_per_step", math.nan) / 2**20)
        out["no_backward"].append(bool(fig.get("no_backward")) and not math.isfinite(out["saved_MB_per_step"][-1]))
        out["peak_MB_per_step"].append(fig.get("peak_mem_bytes", math.nan) / 2**20)
    if not any(math.isfinite(v) for v in out["peak_MB_per_step"]):
        del out["peak_MB_per_step"]  # not measured on the CPU
    return out


_NOT_AXES = TABLE_COLUMNS


def _mb(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "—"


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else "—"


def format_table(table: pd.DataFrame) -> str:
    """The end-of-run table in Markdown, with a note under it on how to read the compute columns."""
    axes = [c for c in table.columns if c not in _NOT_AXES]
    control = table.attrs.get("control", "the control")
    peak = "peak_MB_per_step" in table
    head = [
        "dataset",
        "backbone",
        "method",
        *axes,
        "n",
        "failed",
        "test acc % (mean ± SD)",
        "95% CI",
        f"Δ vs {control} pp [decision CI]",
        "verdict",
        "executed",
        "s/epoch",
        "backward activations MB/step",
        *(["peak GPU MB/step"] if peak else []),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        sd = r["test_acc_sd"]  # one seed has no spread: shown as '—', never 'nan'
        acc = (f"{r['test_acc_mean']:.2f} ± " + (f"{sd:.2f}" if math.isfinite(sd) else "—")) if r["n"] else "—"
        d = r.get("delta_vs_control", math.nan)
        delta = (
            "—"
            if r.get("verdict") == "control" or not math.isfinite(d)
            else (f"{d:+.2f} {_interval(r['delta_ci_low_vs_control'], r['delta_ci_high_vs_control'])}")
        )
        verdict = r.get("verdict") if isinstance(r.get("verdict"), str) else "—"  # a missing one reads NaN
        if r.get("one_seed"):
            verdict += f" ({r['one_seed']})"
        t = r["epoch_time_s"]
        cells = [
            r["dataset"],
            r["backbone"],
            r["method"],
            *(r[a] for a in axes),
            r["n"],
            r["failed"],
            acc,
            _interval(r.get("test_acc_ci_low", math.nan), r.get("test_acc_ci_high", math.nan)),
            delta,
            verdict,
            r.get("executed", "—"),
            f"{t:.3f}" if math.isfinite(t) else "—",
            _mb(r["saved_MB_per_step"]),
            *([_mb(r["peak_MB_per_step"])] if peak else []),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if "executed" in table and table["executed"].str.contains("batched").any():
        lines.append(
            "\ns/epoch of a 'batched ×N' cell is its seeds' share of one stacked step (the step ÷ N), not "
            "a seed's time alone (a cell run both ways shows its runs alone): compare times between cells "
            "executed alike."
        )
    if "no_backward" in table and table["no_backward"].any():
        lines.append("backward activations '—': the method keeps no tensor for a backward pass (not a memory figure).")
    return "\n".join(lines)


def failures(store: Store, suite: Suite, design: Design) -> list[dict[str, Any]]:
    """Every failed or pruned row of this suite version (evaluation and tuning), with its message."""
    ids = {c.cell_id: c for c in design.cells}
    out = []
    for r in store.rows(suite.name, suite_version=suite.version, status=[FAILED, PRUNED]):
        if r.cell_id in ids:
            first = (r.error or "").strip().splitlines()
            out.append(
                {
                    "run_id": r.run_id,
                    "role": r.role,
                    "status": r.status,
                    "cell": ids[r.cell_id].label,
                    "seed": r.seed,
                    "trial": r.trial,
                    "message": first[0] if first else "",
                }
            )
    return out


# ---------------------------------------------------------------- tuning budget curves
def _curves(trials: list[RunRow]) -> pd.DataFrame:
    """``stats.budget_curves`` per cell over tuning rows of the store."""
    frame = pd.DataFrame(
        [
            {
                "cell_id": r.cell_id,
                "trial": r.trial,
                "seed": r.seed,
                "status": r.status,
                TUNING_METRIC: (r.metrics or {}).get(TUNING_METRIC, math.nan),
            }
            for r in trials
        ]
    )
    return stats.budget_curves(frame, TUNING_METRIC, factors=["cell_id"])


def budget_curves(store: Store, suite: Suite, design: Design | None = None) -> pd.DataFrame:
    """One row per (cell, k), as ``budget_curves.csv``: cell_id, the cell's factors, k, trial, status,
    val_acc (the trial's own), best_val_acc (the best after the first k trials, in trial order; pruned and
    failed trials use budget but cannot be best), expected_best_val_acc (the expected best of k random
    trials among the completed ones), chosen (the trial whose configuration was evaluated) and the
    trial's parameters (param.*)."""
    rows = store.rows(suite.name, role=TUNING, suite_version=suite.version)
    cells = (
        {c.cell_id for c in design.cells}
        if design is not None
        else resultset.declared_cells(store, suite.name, suite.version)
    )
    rows = [r for r in rows if r.cell_id in cells]
    if not rows:
        return pd.DataFrame()
    curves = _curves(rows)
    by_cell: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault(r.cell_id, {})[r.trial] = r
    chosen = {}
    for cell_id, trials in by_cell.items():
        if all(r.status in FINISHED for r in trials.values()):
            best = choose_best(list(trials.values()))
            chosen[cell_id] = best.trial if best is not None else None
    out = []
    for c in curves.to_dict("records"):
        r = by_cell[c["cell_id"]][c["trial"]]
        out.append(
            {
                "cell_id": c["cell_id"],
                **r.factors,
                "k": c["k"],
                "trial": r.trial,
                "status": r.status,
                TUNING_METRIC: (r.metrics or {}).get(TUNING_METRIC, math.nan),
                "best_val_acc": c["best_so_far"],
                "expected_best_val_acc": c["expected_max"],
                "chosen": chosen.get(c["cell_id"]) == r.trial,
                **{f"param.{p}": v for p, v in (r.params or {}).items()},
            }
        )
    return pd.DataFrame(out)


# ---------------------------------------------------------------- each cell's aggregate, for its MLflow parent
def cell_aggregates(
    store: Store, suite: Suite, design: Design, control: str | None = None, rope=None
) -> dict[str, dict[str, Any]]:
    """cell_id -> {summary, done, budget_curve}: the cell's evaluation seeds (n, mean, SD, median, CI,
    failures, and the verdict against the control, from ``stats.cell_summaries``), for a tuned cell its
    tuning (trials done / pruned / failed, the chosen trial and its parameters) and its budget curve
    [(k, best validation accuracy after k trials)], and whether the cell is complete."""
    frame = resultset.load(store, suite.name, suite.version).frame
    control, factors = control or suite.control, design.factors
    if len(frame):
        frame, factors = resultset.fold_variants(frame, design.factors, control)
    per_cell = stats.cell_summaries(frame, control=control, rope=rope, factors=factors) if len(frame) else {}
    rows = store.rows(suite.name, suite_version=suite.version)
    by_cell: dict[str, list[RunRow]] = {}
    for r in rows:
        by_cell.setdefault(r.cell_id, []).append(r)
    tuning_rows = [r for r in rows if r.role == TUNING]
    curves = _curves(tuning_rows) if tuning_rows else pd.DataFrame()
    out = {}
    for cell in design.cells:
        runs = [r for r in by_cell.get(cell.cell_id, []) if r.role == EVALUATION]
        trials = sorted((r for r in by_cell.get(cell.cell_id, []) if r.role == TUNING), key=lambda r: r.trial)
        st = per_cell.get(cell.cell_id, {})
        n = int(st.get("n", 0))
        summary: dict[str, Any] = {"n": n, "failures": int(st.get("failures", 0))}
        if n:
            summary["test_acc_mean"] = st["mean"]
            if n > 1:
                summary["test_acc_sd"] = st["sd"]
        summary.update({f"test_acc_{k}": st[k] for k in ("median", "ci_low", "ci_high") if k in st})
        summary.update(
            {
                f"{k}_vs_control": st[k]
                for k in ("delta", "delta_ci_low", "delta_ci_high", "p_adj", "verdict")
                if k in st
            }
        )
        if st.get("one_seed"):  # the verdict's flag: one seed lies outside the others
            summary["one_seed_vs_control"] = st["one_seed"]
        if st:
            summary["control"] = st["control"]
        curve = []
        if trials:
            summary.update({f"tuning_{s}": sum(r.status == s for r in trials) for s in (DONE, PRUNED, FAILED)})
            best = choose_best(trials) if all(r.status in FINISHED for r in trials) else None
            if best is not None:
                summary["tuning_best_trial"] = best.trial
                summary["tuning_best_val_acc"] = best.metrics[TUNING_METRIC]
                summary.update({f"tuned.{k}": v for k, v in (best.params or {}).items()})
            mine = curves[curves["cell_id"] == cell.cell_id]
            curve = [(int(k), float(b)) for k, b in zip(mine["k"], mine["best_so_far"]) if math.isfinite(b)]
        done = all(r.status in FINISHED for r in runs) and len(runs) == len(suite.seeds)
        mine_all = by_cell.get(cell.cell_id, [])
        starts = [r.started for r in mine_all if r.started]
        ends = [r.finished for r in mine_all if r.finished]
        span = (min(starts) if starts else None, max(ends) if ends else None)  # the parent's own duration
        out[cell.cell_id] = {"summary": summary, "done": done, "budget_curve": curve, "span": span}
    return out


def summarize_cells(suite: Suite, design: Design, store: Store, tracker, control: str | None = None, rope=None) -> None:
    """Log each cell's aggregate (``cell_aggregates``) onto its MLflow parent run, so the UI ranks and
    compares cells; a cell none of whose runs has started has no parent yet and is left out."""
    aggregates = cell_aggregates(store, suite, design, control, rope)
    current = resultset.declared_cells(store, suite.name, suite.version)
    tracker.mark_superseded(current, set(store.cells(suite.name, suite.version)) - current)
    for cell in design.cells:
        agg = aggregates[cell.cell_id]
        if agg["span"][0] is None:
            continue
        tracker.log_cell_summary(
            cell.cell_id,
            cell.factors,
            cell.config.to_dict(),
            suite.version,
            agg["summary"],
            agg["done"],
            budget_curve=agg["budget_curve"],
            span=agg["span"],
        )
