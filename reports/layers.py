"""Report kind 'layers': per-layer diagnostics after Adamson 2025 (arXiv 2504.11229), as reconstructed
in methods.md §6.1.

For every method that records per-unit accuracy ('<split>_acc.unitK' in its curves): per-layer accuracy
curves; the final per-layer accuracy by depth; the delay statistic (first epoch at which a layer reaches a
fraction of its final accuracy), mean ± CI over seeds by depth; and the correlation of each layer's
accuracy with the model's accuracy, within a run over time (Pearson and Spearman, Fisher-z averaged over
seeds) and across seeds at a fixed epoch.
"""
from __future__ import annotations

import pandas as pd

from ffbench import figures as F
from ffbench import stats
from ffbench.report import ReportContext, ReportKind, Section, fmt_ci, fmt_num, fmt_p, fmt_pct, report_kind


def _unit_runs(ctx: ReportContext) -> pd.DataFrame:
    split = ctx.options.split
    if "curves" not in ctx.frame:
        return ctx.frame.iloc[0:0]
    has = ctx.frame["curves"].map(lambda c: any(k.startswith(f"{split}_acc.unit") for row in (c or []) for k in row))
    return ctx.frame[has & (ctx.frame["status"] == "done")]


def _group(ctx: ReportContext, df: pd.DataFrame) -> pd.DataFrame:
    df = ctx.with_task(df)
    return df.assign(group=df["method"].astype(str) + " / " + df["task"].astype(str)) if len(df) else df


@report_kind("layers", "Per-layer diagnostics (Adamson 2025): per-unit accuracy curves, delay by depth, "
             "layer-model accuracy correlations within runs and across seeds")
class Layers(ReportKind):
    title = "Per-layer diagnostics"
    order = 30

    def applicable(self, ctx: ReportContext) -> str | None:
        if not len(_unit_runs(ctx)):
            return (f"no finished run recorded per-unit accuracy ('{ctx.options.split}_acc.unitK' in its curves); "
                    "methods with a head or a local loss on every unit record it")
        return None

    def build(self, ctx: ReportContext) -> list[Section]:
        o = ctx.options
        split = o.split
        runs = _unit_runs(ctx)
        skipped = sorted(set(ctx.frame["method"]) - set(runs["method"]))
        intro = Section("Definitions").text("\n".join([
            f"- Layer (unit) accuracy: accuracy on the {split} split of unit K's own class scores (the method's "
            "`unit_scores`: its head or goodness on that unit), every epoch. Model accuracy (unit 0, 'model'): the "
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
            "- Adamson's exact correlation statistic and layer-accuracy definition are not published (methods.md "
            "§6.1): this is a reconstruction, with both correlation methods shown."]))
        if skipped:
            intro.note(f"Methods without per-unit accuracy (not shown): {', '.join(map(str, skipped))}.")
        return [intro, self.curves(ctx, runs), self.final(ctx, runs), self.delays(ctx, runs),
                self.within(ctx, runs), self.across(ctx, runs)]

    def curves(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        split = ctx.options.split
        sec = Section("Per-layer accuracy curves")
        long = _group(ctx, stats.curves_long(runs, ctx.factors, series=(f"{split}_acc", f"{split}_acc.unit*")))
        bands = stats.curve_bands(long, ["group", "unit"], ctx.options.confidence)
        sec.figure("layer_curves", F.layer_curves(bands, facet="group"),
                   caption=f"{split} accuracy per unit (colour by depth) and of the model (black): mean over seeds "
                           f"with a {ctx.options.confidence:.0%} t band.")
        return sec

    def final(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        o = ctx.options
        split = o.split
        sec = Section("Per-layer accuracy at the selected epoch")
        cols = [c for c in runs.columns if c.startswith(f"{split}_acc.unit") and c.rsplit("unit", 1)[1].isdigit()]
        long = runs.melt(id_vars=["run_id", "seed"] + ctx.factors, value_vars=[f"{split}_acc"] + cols,
                         var_name="series", value_name="value")
        long["unit"] = [0 if s == f"{split}_acc" else int(s.rsplit("unit", 1)[1]) for s in long["series"]]
        long = _group(ctx, long.dropna(subset=["value"]))
        summ = stats.summarize_by(long, "value", ["group", "unit"], confidence=o.confidence,
                                  n_resamples=o.n_resamples, rng=o.seed)
        disp = pd.DataFrame({"group": summ["group"], "unit": ["model" if u == 0 else u for u in summ["unit"]],
                             "n": summ["n"], "mean [CI] (%)": [fmt_ci(m, lo, hi) for m, lo, hi in
                                                               zip(summ["mean"], summ["ci_low"], summ["ci_high"])],
                             "SD (%)": [fmt_pct(v) for v in summ["sd"]]})
        sec.table("final_by_unit", summ, disp,
                  caption=f"{split} accuracy of each unit at the best-validation epoch (model = the default rule).")
        sec.figure("final_by_unit", F.by_depth(summ.assign(mean=summ["mean"] * 100, ci_low=summ["ci_low"] * 100,
                                                         ci_high=summ["ci_high"] * 100),
                                             ylabel=f"{split} accuracy (%)", title="accuracy by depth"),
                   caption=f"Accuracy by depth (unit 0 = model), mean and {o.confidence:.0%} bootstrap CI.")
        return sec

    def delays(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        o = ctx.options
        sec = Section(f"Delay: epoch to reach {o.delay_fraction:.0%} of the final accuracy")
        d = stats.layer_delays(runs, split=o.split, fraction=o.delay_fraction, keys=ctx.factors)
        if not len(d):
            return sec.note("No curves.")
        d = _group(ctx, d)
        summ = stats.summarize_by(d, "delay", ["group", "unit"], confidence=o.confidence, n_resamples=o.n_resamples,
                                  rng=o.seed)
        disp = pd.DataFrame({"group": summ["group"], "unit": ["model" if u == 0 else u for u in summ["unit"]],
                             "n (seeds)": summ["n"],
                             "delay, epochs [CI]": [fmt_ci(m, lo, hi, 2, 1) for m, lo, hi in
                                                   zip(summ["mean"], summ["ci_low"], summ["ci_high"])],
                             "median": [fmt_num(v, 1) for v in summ["median"]],
                             "range": [f"{fmt_num(a, 0)}–{fmt_num(b, 0)}" for a, b in zip(summ["min"], summ["max"])]})
        sec.table("delays", d, disp, caption=f"Delay per unit, mean over seeds with a {o.confidence:.0%} bootstrap CI.")
        sec.figure("delays", F.by_depth(summ, ylabel="epochs", title=f"delay to {o.delay_fraction:.0%} of final"),
                   caption="Delay by depth: deeper units reaching their plateau later is Adamson's finding (1).")
        return sec

    def within(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        o = ctx.options
        sec = Section("Layer–model correlation within runs (over epochs)")
        w = stats.layer_correlations_within(runs, split=o.split, keys=ctx.factors)
        if not len(w):
            return sec.note("No curves.")
        w = _group(ctx, w)
        rows = []
        for (grp, unit, m), g in w.groupby(["group", "unit", "method_corr"], sort=True):
            fz = stats.fisher_z_mean(g["r"], o.confidence)
            rows.append({"group": grp, "unit": unit, "method_corr": m, **fz, "epochs": int(g["epochs"].median()),
                         "undefined": int(g["r"].isna().sum()), "median per-run p": float(g["p"].median())})
        summ = pd.DataFrame(rows)
        disp = pd.DataFrame({"group": summ["group"], "unit": summ["unit"], "correlation": summ["method_corr"],
                             "r̄ (Fisher z) [CI]": [fmt_ci(r, lo, hi, 3, 1) for r, lo, hi in
                                                   zip(summ["r_mean"], summ["ci_low"], summ["ci_high"])],
                             "seeds": summ["runs"], "undefined": summ["undefined"], "epochs": summ["epochs"],
                             "t": [fmt_num(v) for v in summ["t"]], "p (mean z = 0)": [fmt_p(v) for v in summ["p"]],
                             "median per-run p": [fmt_p(v) for v in summ["median per-run p"]]})
        sec.table("corr_within", w, disp,
                  caption="Correlation of each unit's accuracy curve with the model's. Undefined: runs with fewer "
                          "than 3 epochs or a constant curve.")
        if summ["r_mean"].notna().any():
            fig_df = summ.assign(group=summ["group"] + " (" + summ["method_corr"] + ")")
            sec.figure("corr_within", F.by_depth(fig_df, y="r_mean", ylabel="correlation with model accuracy",
                                                 title="within runs, over epochs", hline=0.0),
                       caption=f"Fisher-z mean correlation by depth with {o.confidence:.0%} t intervals over seeds; "
                               "Adamson's findings (2)-(3): strong for shallow units, weakening with depth.")
        return sec

    def across(self, ctx: ReportContext, runs: pd.DataFrame) -> Section:
        o = ctx.options
        sec = Section("Layer–model correlation across seeds (fixed epoch)")
        a = stats.layer_correlations_across(runs, split=o.split, epoch="last", by=ctx.factors, confidence=o.confidence)
        if not len(a):
            return sec.note("No curves.")
        a = _group(ctx, a)
        disp = pd.DataFrame({"group": a["group"], "unit": a["unit"], "epoch": a["epoch"], "correlation": a["method_corr"],
                             "r [CI]": [fmt_ci(r, lo, hi, 3, 1) for r, lo, hi in zip(a["r"], a["ci_low"], a["ci_high"])],
                             "n (seeds)": a["n"], "p": [fmt_p(v) for v in a["p"]]})
        sec.table("corr_across", a, disp,
                  caption="Correlation between unit and model accuracy over seeds at the last common epoch; "
                          "Fisher z interval (n > 3 only); undefined with fewer than 3 seeds or no spread.")
        if a["r"].notna().any():
            fig_df = a.assign(group=a["group"] + " (" + a["method_corr"] + ")", mean=a["r"])
            sec.figure("corr_across", F.by_depth(fig_df, ylabel="correlation with model accuracy",
                                                 title="across seeds, last epoch", hline=0.0),
                       caption="Across-seed correlation by depth with Fisher z intervals.")
        return sec
