"""Report kind 'layers': per-layer diagnostics after Adamson (2025), "The Forward-Forward Algorithm:
Characterizing Training Behavior" (arXiv:2504.11229), whose exact statistics are not published: this is a
reconstruction that shows both correlation methods.

For every method that records per-unit accuracy ('<split>_acc.unitK' in its curves): per-layer accuracy
curves; the final per-layer accuracy by depth; the delay statistic (first epoch at which a layer reaches a
fraction of its final accuracy), mean ± CI over seeds by depth; and the correlation of each layer's
accuracy with the model's accuracy, within a run over time (Pearson and Spearman, Fisher-z averaged over
seeds) and across seeds at a fixed epoch.

A unit whose accuracy equals the model's at every epoch of every run is the model's own output (e.g.
``bp.deepsup``'s last unit under its default rule 'last'): it is marked as such, and left out of the
layer-model correlations, which would be 1 by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis import figures as F
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_p, fmt_pct
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext


def _unit_runs(ctx: ReportContext) -> pd.DataFrame:
    split = ctx.options.split
    if "curves" not in ctx.frame:
        return ctx.frame.iloc[0:0]
    has = ctx.frame["curves"].map(lambda c: any(k.startswith(f"{split}_acc.unit") for row in (c or []) for k in row))
    return ctx.frame[has & (ctx.frame["status"] == "done")]


def _group(ctx: ReportContext, df: pd.DataFrame) -> pd.DataFrame:
    df = ctx.with_task(df)
    return df.assign(group=df["method"].astype(str) + " / " + df["task"].astype(str)) if len(df) else df


OUTPUT_TOLERANCE = 1e-9  # accuracies computed from the same predictions agree to rounding


def model_output_units(long: pd.DataFrame) -> dict[str, set[int]]:
    """Per group, the units whose accuracy equals the model's (unit 0) at every recorded epoch of every run
    (at least two points): the model's own output, not a layer to compare it with."""
    out: dict[str, set[int]] = {}
    if not len(long):
        return out
    for grp, g in long.groupby("group", sort=True):
        wide = g.pivot_table(index=["run_id", "epoch"], columns="unit", values="value")
        if 0 not in wide:
            continue
        same = set()
        for k in (c for c in wide.columns if c != 0):
            pair = wide[[0, k]].dropna()
            if len(pair) >= 2 and np.allclose(pair[k], pair[0], rtol=0, atol=OUTPUT_TOLERANCE):
                same.add(int(k))
        if same:
            out[str(grp)] = same
    return out


def unit_label(unit: int, group: str, outputs: Mapping[str, set[int]]) -> str:
    if unit == 0:
        return "model"
    return f"{unit} (= model output)" if unit in outputs.get(group, ()) else str(unit)


def drop_outputs(df: pd.DataFrame, outputs: Mapping[str, set[int]]) -> pd.DataFrame:
    """``df`` without the rows of units that are their group's model output."""
    if not len(df) or not outputs:
        return df
    keep = [u not in outputs.get(g, ()) for g, u in zip(df["group"].astype(str), df["unit"])]
    return df[keep]


@report_kind(
    "layers",
    "Per-layer diagnostics (Adamson 2025): per-unit accuracy curves, delay by depth, "
    "layer-model accuracy correlations within runs and across seeds",
)
class Layers(ReportKind):
    title = "Per-layer diagnostics"
    order = 30
    references = ("adamson2025",)

    def applicable(self, ctx: ReportContext) -> str | None:
        if not len(_unit_runs(ctx)):
            return (
                f"no finished run recorded per-unit accuracy ('{ctx.options.split}_acc.unitK' in its curves); "
                "methods with a head or a local loss on every unit record it"
            )
        return None

    def build(self, ctx: ReportContext) -> list[Section]:
        o = ctx.options
        split = o.split
        runs = _unit_runs(ctx)
        skipped = sorted(set(ctx.frame["method"]) - set(runs["method"]))
        intro = Section("Definitions").text(
            "\n".join(
                [
                    f"- Layer (unit) accuracy: accuracy on the {split} split of unit K's own class scores (the method's "
                    "per-unit scores from `evaluate`: its head or goodness on that unit), every epoch. Model accuracy (unit 0, 'model'): the "
                    "method's default inference rule.",
                    f"- Delay: the first epoch at which a unit reaches {o.delay_fraction:.0%} of its final (last-epoch) "
                    f"accuracy; mean over seeds with a {o.confidence:.0%} bootstrap CI ({o.n_resamples} resamples, seed "
                    f"{o.seed}).",
                    "- Within-run correlation: Pearson r and Spearman ρ between a unit's accuracy curve and the model's over "
                    "the epochs of one run; averaged over seeds through Fisher's z, with a t interval over seeds and a "
                    "one-sample t-test of mean z = 0 (seeds are the replicates: successive epochs are autocorrelated, so "
                    "per-run p-values are optimistic and are shown only as a median).",
                    "- Across-seed correlation: Pearson r and Spearman ρ between unit and model accuracy over the seeds at "
                    "the last epoch every run reached, with n, p and a Fisher z interval.",
                    "- Adamson (2025) does not publish the exact correlation statistic or layer-accuracy definition: this "
                    "is a reconstruction, with both correlation methods shown.",
                    "- A unit whose accuracy equals the model's at every epoch of every run is the model's own output (the "
                    "default rule reads that unit, e.g. `bp.deepsup`'s last unit under rule 'last'): it is marked "
                    "'= model output' and left out of the correlations with the model, which would be 1 by construction.",
                ]
            )
        )
        if skipped:
            intro.note(f"Methods without per-unit accuracy (not shown): {', '.join(map(str, skipped))}.")
        outputs = self.outputs(ctx)
        if outputs:
            intro.note(
                "The model's own output (left out of the correlations): "
                + "; ".join(f"{g}: unit {', '.join(map(str, sorted(u)))}" for g, u in outputs.items())
                + "."
            )
        return [
            intro,
            self.curves(ctx),
            self.final(ctx, runs, outputs),
            self.delays(ctx, runs, outputs),
            self.within(ctx, runs),
            self.across(ctx, runs, outputs),
        ]

    def long(self, ctx: ReportContext) -> pd.DataFrame:
        split = ctx.options.split
        return ctx.cached(
            "layers.long",
            lambda: _group(
                ctx, stats.curves_long(_unit_runs(ctx), ctx.factors, series=(f"{split}_acc", f"{split}_acc.unit*"))
            ),
        )

    def outputs(self, ctx: ReportContext) -> dict[str, set[int]]:
        return ctx.cached("layers.outputs", lambda: model_output_units(self.long(ctx)))

    def within_summary(self, ctx: ReportContext, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The within-run correlations per run (``w``) and their Fisher-z summary per group, unit and
        correlation method, without the units that are the model's output."""

        def compute():
            o = ctx.options
            w = stats.layer_correlations_within(runs, split=o.split, keys=ctx.factors)
            if not len(w):
                return w, pd.DataFrame()
            w = drop_outputs(_group(ctx, w), self.outputs(ctx))
            rows = []
            for (grp, unit, m), g in w.groupby(["group", "unit", "method_corr"], sort=True):
                fz = stats.fisher_z_mean(g["r"], o.confidence)
                rows.append(
                    {
                        "group": grp,
                        "unit": unit,
                        "method_corr": m,
                        **fz,
                        "epochs": int(g["epochs"].median()),
                        "undefined": int(g["r"].isna().sum()),
                        "median per-run p": float(g["p"].median()),
                    }
                )
            return w, pd.DataFrame(rows)

        return ctx.cached("layers.within", compute)

    def headline(self, ctx: ReportContext) -> list[str]:
        runs = _unit_runs(ctx)
        if not len(runs):
            return []
        lines = []
        outputs = self.outputs(ctx)
        if outputs:
            lines.append(
                "**The model's own output** (a unit the default rule reads; correlated with the model by "
                "construction, so left out of the correlation findings): "
                + "; ".join(f"{g}: unit {', '.join(map(str, sorted(u)))}" for g, u in outputs.items())
                + "."
            )
        _, summ = self.within_summary(ctx, runs)
        if len(summ):
            p = summ[summ["method_corr"] == "pearson"]
            parts = [
                f"{g}: "
                + ", ".join(
                    f"unit {int(r['unit'])} {fmt_ci(r['r_mean'], r['ci_low'], r['ci_high'], 2, 1)}"
                    for r in gg.to_dict("records")
                )
                for g, gg in p.groupby("group", sort=True)
            ]
            if parts:
                lines.append(
                    "**Layer–model correlation within runs** (Pearson r over epochs, Fisher-z mean over "
                    f"seeds, {ctx.options.confidence:.0%} CI): " + "; ".join(parts) + "."
                )
        return lines

    def curves(self, ctx: ReportContext) -> Section:
        split = ctx.options.split
        sec = Section("Per-layer accuracy curves")
        bands = stats.curve_bands(self.long(ctx), ["group", "unit"], ctx.options.confidence)
        sec.figure(
            "layer_curves",
            F.layer_curves(bands, facet="group", output_units=self.outputs(ctx)),
            caption=f"{split} accuracy per unit (colour by depth) and of the model (black): mean over seeds "
            f"with a {ctx.options.confidence:.0%} t band, clipped to 0-100%; panels share the accuracy "
            "axis. Dashed: a unit that is the model's own output (it lies on the model's line).",
        )
        return sec

    def final(self, ctx: ReportContext, runs: pd.DataFrame, outputs: Mapping[str, set[int]]) -> Section:
        o = ctx.options
        split = o.split
        sec = Section("Per-layer accuracy at the selected epoch")
        cols = [c for c in runs.columns if c.startswith(f"{split}_acc.unit") and c.rsplit("unit", 1)[1].isdigit()]
        long = runs.melt(
            id_vars=["run_id", "seed"] + ctx.factors,
            value_vars=[f"{split}_acc"] + cols,
            var_name="series",
            value_name="value",
        )
        long["unit"] = [0 if s == f"{split}_acc" else int(s.rsplit("unit", 1)[1]) for s in long["series"]]
        long = _group(ctx, long.dropna(subset=["value"]))
        summ = stats.summarize_by(
            long, "value", ["group", "unit"], confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed
        )
        disp = pd.DataFrame(
            {
                "group": summ["group"],
                "unit": [unit_label(u, g, outputs) for g, u in zip(summ["group"], summ["unit"])],
                "n": summ["n"],
                "mean [CI] (%)": [
                    fmt_ci(m, lo, hi) for m, lo, hi in zip(summ["mean"], summ["ci_low"], summ["ci_high"])
                ],
                "SD (%)": [fmt_pct(v) for v in summ["sd"]],
            }
        )
        sec.table(
            "final_by_unit",
            summ,
            disp,
            caption=f"{split} accuracy of each unit at the best-validation epoch (model = the default rule).",
        )
        sec.figure(
            "final_by_unit",
            F.by_depth(
                summ.assign(mean=summ["mean"] * 100, ci_low=summ["ci_low"] * 100, ci_high=summ["ci_high"] * 100),
                ylabel=f"{split} accuracy (%)",
                title="accuracy by depth",
                limits=(0.0, 100.0),
            ),
            caption=f"Accuracy by depth (unit 0 = model), mean and {o.confidence:.0%} bootstrap CI.",
        )
        return sec

    def delays(self, ctx: ReportContext, runs: pd.DataFrame, outputs: Mapping[str, set[int]]) -> Section:
        o = ctx.options
        sec = Section(f"Delay: epoch to reach {o.delay_fraction:.0%} of the final accuracy")
        d = stats.layer_delays(runs, split=o.split, fraction=o.delay_fraction, keys=ctx.factors)
        if not len(d):
            return sec.note("No curves.")
        d = _group(ctx, d)
        summ = stats.summarize_by(
            d, "delay", ["group", "unit"], confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed
        )
        disp = pd.DataFrame(
            {
                "group": summ["group"],
                "unit": [unit_label(u, g, outputs) for g, u in zip(summ["group"], summ["unit"])],
                "n (seeds)": summ["n"],
                "delay, epochs [CI]": [
                    fmt_ci(m, lo, hi, 2, 1) for m, lo, hi in zip(summ["mean"], summ["ci_low"], summ["ci_high"])
                ],
                "median": [fmt_num(v, 1) for v in summ["median"]],
                "range": [f"{fmt_num(a, 0)}–{fmt_num(b, 0)}" for a, b in zip(summ["min"], summ["max"])],
            }
        )
        sec.table("delays", d, disp, caption=f"Delay per unit, mean over seeds with a {o.confidence:.0%} bootstrap CI.")
        sec.figure(
            "delays",
            F.by_depth(summ, ylabel="epochs", title=f"delay to {o.delay_fraction:.0%} of final", limits=(0.0, np.inf)),
            caption="Delay by depth. Adamson (2025) reports that deeper layers improve later than shallower "
            "ones; a rising line here is the same pattern.",
        )
        return sec

    def within(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        o = ctx.options
        sec = Section("Layer–model correlation within runs (over epochs)")
        w, summ = self.within_summary(ctx, runs)
        if not len(summ):
            return sec.note("No unit to correlate with the model (no curves, or only the model's own output).")
        disp = pd.DataFrame(
            {
                "group": summ["group"],
                "unit": summ["unit"],
                "correlation": summ["method_corr"],
                "r̄ (Fisher z) [CI]": [
                    fmt_ci(r, lo, hi, 3, 1) for r, lo, hi in zip(summ["r_mean"], summ["ci_low"], summ["ci_high"])
                ],
                "seeds": summ["runs"],
                "undefined": summ["undefined"],
                "epochs": summ["epochs"],
                "t": [fmt_num(v) for v in summ["t"]],
                "p (mean z = 0)": [fmt_p(v) for v in summ["p"]],
                "median per-run p": [fmt_p(v) for v in summ["median per-run p"]],
            }
        )
        sec.table(
            "corr_within",
            w,
            disp,
            caption="Correlation of each unit's accuracy curve with the model's (units that are the model's "
            "own output left out). Undefined: runs with fewer than 3 epochs or a constant curve.",
        )
        if summ["r_mean"].notna().any():
            fig_df = summ.assign(group=summ["group"] + " (" + summ["method_corr"] + ")")
            sec.figure(
                "corr_within",
                F.by_depth(
                    fig_df,
                    y="r_mean",
                    ylabel="correlation with model accuracy",
                    title="within runs, over epochs",
                    hline=0.0,
                    limits=(-1.0, 1.0),
                ),
                caption=f"Fisher-z mean correlation by depth with {o.confidence:.0%} t intervals over seeds. "
                "Adamson (2025) reports strong correlation for shallow layers, weakening with depth "
                "and width.",
            )
        return sec

    def across(self, ctx: ReportContext, runs: pd.DataFrame, outputs: Mapping[str, set[int]]) -> Section:
        o = ctx.options
        sec = Section("Layer–model correlation across seeds (fixed epoch)")
        a = stats.layer_correlations_across(runs, split=o.split, epoch="last", by=ctx.factors, confidence=o.confidence)
        if not len(a):
            return sec.note("No curves.")
        a = drop_outputs(_group(ctx, a), outputs)
        if not len(a):
            return sec.note("No unit to correlate with the model other than the model's own output.")
        disp = pd.DataFrame(
            {
                "group": a["group"],
                "unit": a["unit"],
                "epoch": a["epoch"],
                "correlation": a["method_corr"],
                "r [CI]": [fmt_ci(r, lo, hi, 3, 1) for r, lo, hi in zip(a["r"], a["ci_low"], a["ci_high"])],
                "n (seeds)": a["n"],
                "p": [fmt_p(v) for v in a["p"]],
            }
        )
        sec.table(
            "corr_across",
            a,
            disp,
            caption="Correlation between unit and model accuracy over seeds at the last common epoch (units "
            "that are the model's own output left out); Fisher z interval (n > 3 only); undefined with "
            "fewer than 3 seeds or no spread.",
        )
        if a["r"].notna().any():
            fig_df = a.assign(group=a["group"] + " (" + a["method_corr"] + ")", mean=a["r"])
            sec.figure(
                "corr_across",
                F.by_depth(
                    fig_df,
                    ylabel="correlation with model accuracy",
                    title="across seeds, last epoch",
                    hline=0.0,
                    limits=(-1.0, 1.0),
                ),
                caption="Across-seed correlation by depth with Fisher z intervals.",
            )
        return sec
