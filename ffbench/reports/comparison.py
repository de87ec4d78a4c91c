"""Report kind 'comparison': methods against the control, and across tasks.

Accuracy per cell with CIs; paired differences against the control with tests, effect sizes, corrected
p-values and verdicts (and all pairs, exploratory, when asked); average ranks, Friedman and an IQM
aggregate across tasks; the seed-count advisor; learning curves; tuning budget curves; time and memory;
and the list of failed or unfinished runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis import figures as F
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_p, fmt_pct, fmt_sig
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext, fail_rate, verdicts_display


def _n(v) -> str:
    return ">10000" if v is None or pd.isna(v) else str(int(v))


def cells_display(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **{k: cells[k].astype(str) for k in keys},
            "runs": cells["runs"],
            "n": cells["n"],
            "failed": cells["failures"],
            "missing": cells["missing"],
            "failure rate [exact CI]": [
                fail_rate(f, r - m, *stats.clopper_pearson(f, r - m))
                for f, r, m in zip(cells["failures"], cells["runs"], cells["missing"])
            ],
            "survivors: mean ± SD (%)": [f"{fmt_pct(m)} ± {fmt_pct(s)}" for m, s in zip(cells["mean"], cells["sd"])],
            "survivors: median (%)": [fmt_pct(v) for v in cells["median"]],
            "95% CI of mean (%)": [
                fmt_ci(np.nan, lo, hi).split(" ", 1)[-1] if np.isfinite(lo) else "—"
                for lo, hi in zip(cells["ci_low"], cells["ci_high"])
            ],
            "CI method": cells["ci_method"],
        }
    )


def tests_display(comp: pd.DataFrame) -> pd.DataFrame:
    """The test statistics behind each verdict, one row per comparison in the verdict table's order; the
    first column names the comparison (it stays in view when the table scrolls)."""
    recs = comp.to_dict("records")
    return pd.DataFrame(
        {
            "comparison": [
                f"{r['method']} vs {r['reference']}" + (f" · {r['task']}" if r.get("task") else "") for r in recs
            ],
            "pairs": comp["n_pairs"],
            "Δ pp [95% CI]": [fmt_ci(d, lo, hi) for d, lo, hi in zip(comp["delta"], comp["ci_low"], comp["ci_high"])],
            "SD of Δ (pp)": [fmt_pct(v) for v in comp["sd_diff"]],
            "t (df)": [f"{fmt_num(t)} ({int(df)})" if np.isfinite(t) else "—" for t, df in zip(comp["t"], comp["df"])],
            "p_t": [fmt_p(p) for p in comp["p_t"]],
            "p adj": [f"{fmt_p(p)} ({c})" for p, c in zip(comp["p_adj"], comp["correction"])],
            "equiv. p adj": [fmt_p(p) for p in comp["p_equiv_adj"]],
            "Wilcoxon p": [
                fmt_p(p) + (" *" if note else "") + (" (Monte Carlo)" if str(how).startswith("Monte") else "")
                for p, note, how in zip(
                    comp["p_wilcoxon"], comp["wilcoxon_note"], comp.get("wilcoxon_method", [""] * len(comp))
                )
            ],
            "Hedges' g [CI]": [
                fmt_ci(g, lo, hi, scale=1) for g, lo, hi in zip(comp["hedges_g"], comp["g_ci_low"], comp["g_ci_high"])
            ],
            "P(m>ref) [CI]": [
                fmt_ci(g, lo, hi, scale=1) for g, lo, hi in zip(comp["ps"], comp["ps_ci_low"], comp["ps_ci_high"])
            ],
            "paired P(Δ>0) [CI]": [
                fmt_ci(g, lo, hi, scale=1)
                for g, lo, hi in zip(comp["ps_paired"], comp["ps_paired_ci_low"], comp["ps_paired_ci_high"])
            ],
            "McNemar p adj": [fmt_p(p) for p in comp["p_fail_adj"]],
            "ROPE (pp)": [fmt_pct(r) for r in comp["rope"]],
            "why": comp["reason"],
        }
    )


@report_kind(
    "comparison",
    "Method comparison: accuracy per method, paired differences against the control with "
    "verdicts, ranks and an IQM aggregate across tasks, seed advice, learning and budget curves, compute",
)
class Comparison(ReportKind):
    title = "Method comparison"
    order = 10
    references = ("corani2015", "benavoli2017", "demsar2006", "dodge2019", "agarwal2021")

    def applicable(self, ctx: ReportContext) -> str | None:
        return None if "method" in ctx.frame else "the results have no 'method' column"

    def build(self, ctx: ReportContext) -> list[Section]:
        return [
            self.accuracy(ctx),
            self.paired(ctx),
            *self.exploratory(ctx),
            self.variance(ctx),
            self.across(ctx),
            self.advisor(ctx),
            self.curves(ctx),
            self.budget(ctx),
            self.compute(ctx),
            self.failures(ctx),
        ]

    # ------------------------------------------------------------------
    def accuracy(self, ctx: ReportContext) -> Section:
        o = ctx.options
        cells = ctx.cells()
        keys = ["task", "method"]
        sec = Section("Accuracy per method")
        sec.table(
            "cells",
            cells,
            cells_display(cells, keys),
            caption=f"`{o.metric}` per cell over the surviving runs (n); failed runs (failed, diverged, or "
            "finished without a value) and missing ones are counted, not estimated: the means are over "
            f"survivors only. Mean with a {o.confidence:.0%} CI of the method in 'CI method' (t: the "
            "t interval over seeds, calibrated at 3-10 seeds).",
        )
        ok = ctx.frame[stats.ok_mask(ctx.frame, o.metric)]
        sec.figure(
            "accuracy",
            F.accuracy_by_method(cells, ok, value=o.metric, control=o.control, ylabel=f"{o.metric} (%)"),
            caption=f"Mean and {o.confidence:.0%} CI per method over the surviving runs (right of each column, in the "
            "method's colour); grey dots: the individual seeds; panels share the accuracy axis. The "
            f"control `{o.control}` is marked under its column.",
        )
        return sec

    def paired(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section(f"Paired differences against the control ({o.control})")
        if o.control not in ctx.methods and not o.confirmatory:
            return sec.note(
                f"The control `{o.control}` has no runs in this suite (methods: {', '.join(ctx.methods)}); "
                "set the control (`--control`) to compare."
            )
        comp = ctx.comparisons()
        conf = comp[comp["family"] == "confirmatory"] if len(comp) else comp
        if not len(conf):
            return sec.note("No confirmatory comparison could be formed (no task has both the method and the control).")
        counts = conf["verdict"].value_counts()
        fam = conf[conf["in_family"]]
        m = int(fam["family_size"].iloc[0]) if len(fam) else 0
        level = f"{conf['decision_confidence'].iloc[0]:.2%}" if len(fam) else "—"
        sec.text(
            f"{len(conf)} confirmatory comparison(s): "
            + ", ".join(f"**{counts.get(v, 0)} {v}**" for v in stats.VERDICTS)
            + ". "
            "Δ = method − control, in percentage points, paired by seed; positive = the method is more accurate. "
            f"One Holm family over the difference and the equivalence claims of the {m} comparison(s) that can "
            f"reach a verdict ({2 * m} hypotheses; the other {len(conf) - m} are shown, not counted). The verdict is "
            f"read off one interval, the t interval of Δ at the level where Holm stops ({level} here): "
            "**equivalent** when it lies inside ±ROPE, **better**/**worse** when it excludes 0, otherwise "
            "**insufficient evidence**; identical differences on every seed are reported as degenerate, with "
            "no claim. Failed runs enter as an outcome: failure rates with exact (Clopper–Pearson) intervals, "
            "McNemar's exact test on seed pairs (Holm over the comparisons with a discordant seed; "
            "'less reliable' when significant), and a worst-case sensitivity analysis that scores every failed "
            "run at chance accuracy (1/classes) and decides the family again; a verdict that does not survive "
            "it is flagged. A seed whose difference lies far outside the others' is flagged beside the "
            "verdict with the verdict without it (leave-one-out residual t-test, p < α / seeds): the t interval "
            "assumes roughly normal differences, and one collapsed seed breaks its coverage. "
            "P(worse / ROPE / better): Bayesian correlated t-test on the per-seed differences "
            f"(Corani & Benavoli 2015) with ρ = {stats.RHO:g}: the seeds are independent training runs on a "
            "fixed split, whose shared test-set variance is in the variance-sources table."
        )
        sec.table(
            "comparisons",
            conf,
            verdicts_display(conf),
            caption="Verdicts. Decision CI: the interval the verdict is read from (Holm-consistent level); "
            "P(worse / ROPE / better): posterior of the Bayesian correlated t-test; failed: failure "
            "counts with exact (Clopper–Pearson) 95% intervals.",
        )
        sec.table(
            "comparison_tests",
            conf,
            tests_display(conf),
            caption="The tests behind each verdict (same rows). 95% CI: the uncorrected "
            f"{o.confidence:.0%} interval of the mean paired difference ({conf['ci_method'].iloc[0]}); "
            "p_t: paired t-test; p adj: Holm-corrected difference claim; equiv. p adj: Holm-corrected "
            "claim 'the interval lies inside ±ROPE' (2 × the TOST p); paired P(Δ>0): share of seeds the "
            f"method wins, exact CI; Wilcoxon signed-rank p (exact: the sign-flip distribution, tied "
            f"differences at mid-ranks, zeros dropped), * = fewer than {stats.WILCOXON_FLOOR} pairs "
            "(cannot reach p < 0.05); McNemar p adj: exact test of the failure rates on seed pairs (Holm).",
        )
        sec.figure(
            "differences",
            F.paired_differences(conf),
            caption=f"Paired difference to the control with its uncorrected {o.confidence:.0%} CI; shaded: "
            "the ROPE; colour: verdict (read off the wider decision interval in the table).",
        )
        small = conf[conf["n_pairs"] < stats.WILCOXON_FLOOR]
        if len(small):
            sec.note(
                f"{len(small)} comparison(s) rest on fewer than {stats.WILCOXON_FLOOR} paired seeds: the "
                "Wilcoxon test cannot reach significance there (the verdicts use the t interval, which keeps its "
                "coverage at small n)."
            )
        return sec

    def exploratory(self, ctx: ReportContext) -> list[Section]:
        comp = ctx.comparisons()
        if not len(comp) or not (comp["family"] == "exploratory").any():
            return []
        ex = comp[comp["family"] == "exploratory"]
        sec = Section("All pairs (exploratory)")
        sec.text(
            "Exploratory screening of every other pair of methods; Benjamini–Hochberg (false discovery rate) "
            f"over these {len(ex)} comparisons. Treat as hypotheses for a confirmatory suite, not as claims."
        )
        sec.table("pairs", ex, verdicts_display(ex), caption="Exploratory pairwise comparisons (BH-corrected).")
        sec.table(
            "pairs_tests", ex, tests_display(ex), caption="The tests behind each exploratory verdict (same rows)."
        )
        return [sec]

    def across(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section("Across datasets")
        sec.text(
            "The datasets are the independent units (blocks) of the rank tests; axis levels are treatments "
            "(`method[axis=level]`), never extra blocks, and each backbone is a separate analysis, so the control's "
            "runs are never copied and N counts datasets (Demšar 2006). Per stratum: average ranks and Friedman "
            "with Nemenyi's critical difference (≥3 treatments), each treatment against the control with the "
            "Wilcoxon signed-rank test across datasets (Holm) and the rank z-test (Holm), and the Bayesian "
            "signed-rank test (Benavoli et al. 2017; prior pseudo-observation at 0 of weight 0.5, 50,000 "
            f"posterior draws, seed {o.seed}) against the ROPE."
        )
        done = False
        for stratum, mat in stats.dataset_matrices(ctx.frame, o.metric, factors=ctx.factors):
            tag = ", ".join(f"{k}={v}" for k, v in stratum.items()) or "all"
            if mat.shape[0] < 2 or mat.shape[1] < 2:
                sec.note(
                    f"[{tag}] {mat.shape[0]} complete dataset(s) × {mat.shape[1]} treatment(s): the rank tests "
                    "need at least 2 datasets with every treatment; the per-task comparisons are the result."
                )
                continue
            done = True
            fr = stats.friedman(mat, o.alpha)
            if np.isfinite(fr["chi2"]):
                sec.text(
                    f"[{tag}] Datasets (blocks): {fr['N']}; treatments: {fr['k']}. Friedman χ² = "
                    f"{fmt_num(fr['chi2'])}, p = {fmt_p(fr['p'])}; Iman–Davenport F = {fmt_num(fr['F_iman_davenport'])}, "
                    f"p = {fmt_p(fr['p_iman_davenport'])}; Nemenyi CD at α = {o.alpha:g}: {fmt_num(fr['cd_nemenyi'])} ranks."
                )
            if fr["note"]:
                sec.note(f"[{tag}] {fr['note']}")
            ranks = pd.DataFrame(
                {"treatment": list(fr["ranks"]), "average rank": [round(v, 3) for v in fr["ranks"].values()]}
            )
            sec.table(f"ranks {tag}", ranks, caption=f"[{tag}] Average rank over datasets (1 = best).")
            sec.figure(
                f"ranks {tag}",
                F.rank_plot(fr["ranks"], fr["cd_nemenyi"], title=tag),
                caption="Average ranks and the Nemenyi CD.",
            )
            rope = stats.resolve_rope(o.rope, None)
            ad = (
                stats.across_datasets(mat, o.control, rope=rope, alpha=o.alpha, rng=o.seed)
                if o.control in mat
                else pd.DataFrame()
            )
            if len(ad):
                disp = pd.DataFrame(
                    {
                        "treatment": ad["treatment"],
                        "vs": ad["control"],
                        "N": ad["N"],
                        "wins": ad["wins"],
                        "mean Δ (pp)": [fmt_pct(v) for v in ad["mean_diff"]],
                        "Wilcoxon p (Holm)": [
                            fmt_p(p) + (" *" if n else "") for p, n in zip(ad["p_wilcoxon_holm"], ad["wilcoxon_note"])
                        ],
                        "rank z (Holm p)": [
                            f"{fmt_num(z)} ({fmt_p(p)})" for z, p in zip(ad["rank_z"], ad["p_rank_holm"])
                        ],
                        "P(worse / ROPE / better)": [
                            " / ".join(fmt_num(r[k], 2) for k in ("bayes_p_worse", "bayes_p_rope", "bayes_p_better"))
                            for r in ad.to_dict("records")
                        ],
                    }
                )
                sec.table(
                    f"across {tag}",
                    ad,
                    disp,
                    caption=f"[{tag}] Each treatment against {o.control} across datasets (ROPE ±{fmt_pct(rope)} pp "
                    f"for the Bayesian test; * = fewer than {stats.WILCOXON_FLOOR} datasets, the Wilcoxon "
                    "test cannot reach p < 0.05).",
                )
        if not done:
            sec.note("No stratum has 2 or more complete datasets: no rank tests.")
        agg = stats.aggregate(
            ctx.frame,
            o.metric,
            control=o.control,
            factors=ctx.factors,
            confidence=o.confidence,
            n_resamples=o.n_resamples,
            rng=o.seed,
        )
        if len(agg) and agg["tasks"].max() >= 1:
            disp = pd.DataFrame(
                {
                    "treatment": agg["method"],
                    "tasks": agg["tasks"],
                    "runs (survivors)": agg["runs"],
                    "failed": agg["failures"],
                    "IQM [CI]": [
                        fmt_ci(v, lo, hi, 3, 1) for v, lo, hi in zip(agg["iqm"], agg["iqm_ci_low"], agg["iqm_ci_high"])
                    ],
                    "mean [CI]": [
                        fmt_ci(v, lo, hi, 3, 1)
                        for v, lo, hi in zip(agg["mean"], agg["mean_ci_low"], agg["mean_ci_high"])
                    ],
                    "optimality gap [CI]": [
                        fmt_ci(v, lo, hi, 3, 1)
                        for v, lo, hi in zip(
                            agg["optimality_gap"], agg["optimality_gap_ci_low"], agg["optimality_gap_ci_high"]
                        )
                    ],
                    f"P(improvement over {o.control}) [CI]": [
                        fmt_ci(v, lo, hi, 3, 1)
                        for v, lo, hi in zip(
                            agg["prob_improvement"], agg["prob_improvement_ci_low"], agg["prob_improvement_ci_high"]
                        )
                    ],
                }
            )
            sec.table(
                "aggregate",
                agg,
                disp,
                caption=f"Normalised score (acc − chance) / (mean {o.control} acc − chance) per surviving run, "
                "chance = 1/classes; a task is a dataset × backbone, axis levels are treatments. IQM "
                "(Agarwal et al. 2021), mean and optimality gap over all tasks × seeds, and the "
                "probability of improvement (per task "
                f"P(A > {o.control}), averaged), with stratified-bootstrap {o.confidence:.0%} CIs (seeds "
                f"resampled within tasks, {o.n_resamples} resamples, seed {o.seed}; the tasks are fixed, so "
                "the claim is about these tasks). Failed runs are counted, not scored.",
            )
            sec.figure("aggregate", F.aggregate_plot(agg, control=o.control), caption="Aggregate normalised scores.")
            prof = stats.aggregate_profiles(ctx.frame, o.metric, control=o.control, factors=ctx.factors, rng=o.seed)
            sec.figure(
                "profiles",
                F.performance_profiles(prof, control=o.control),
                caption="Performance profiles (Agarwal et al. 2021): the fraction of surviving runs whose normalised score "
                "exceeds τ, tasks weighted equally, with stratified-bootstrap bands.",
            )
        return sec

    def variance(self, ctx: ReportContext) -> Section:
        sec = Section("Sources of variance")
        vt = stats.variance_table(ctx.frame, ctx.options.metric, ["task", "method"])
        if not len(vt):
            return sec.note(
                "No run stored its per-example test correctness: the test-set sampling variance cannot "
                "be separated from the seed variance."
            )
        disp = pd.DataFrame(
            {
                "task": vt["task"],
                "method": vt["method"],
                "seeds": vt["n_seeds"],
                "test examples": vt["n_test"],
                "mean (%)": [fmt_pct(v) for v in vt["mean"]],
                "SE from seeds (pp)": [fmt_pct(v, 3) for v in vt["se_seed"]],
                "SE from test set (pp)": [fmt_pct(v, 3) for v in vt["se_test"]],
                "binomial SE (pp)": [fmt_pct(v, 3) for v in vt["se_test_binomial"]],
                "SE total (pp)": [fmt_pct(v, 3) for v in vt["se_total"]],
                "2× seeds / 2× test (pp)": [
                    f"{fmt_pct(a, 3)} / {fmt_pct(b, 3)}" for a, b in zip(vt["se_2x_seeds"], vt["se_2x_test"])
                ],
                "narrow by": vt["narrow_by"],
            }
        )
        sec.table(
            "variance_sources",
            vt,
            disp,
            caption="Standard error of each cell's mean accuracy by source, from each run's per-example test "
            "correctness at its selected epoch. Seeds: the spread of accuracy over seeds / √seeds "
            "(training randomness; this is what the intervals above contain). Test set: the sampling "
            "variance of the test examples, which all seeds share and no interval over seeds contains "
            "(per-example bootstrap variance of the seed-averaged accuracy, computed exactly, less its "
            "seed noise). The last columns show which of more seeds or a larger test set narrows the "
            "total more.",
        )
        return self.search(ctx, sec)

    def search(self, ctx: ReportContext, sec: Section) -> Section:
        """The hyperparameter-search part, where the suite repeated its search ([tuning] repeats)."""
        st = stats.search_variance_table(ctx.frame, ctx.repeats, ctx.options.metric, ["task", "method"])
        if not len(st):
            return sec.note(
                "Hyperparameter-search variance is not measured: set `[tuning] repeats` to 2 or more to "
                "repeat each cell's search with other tuning seeds and evaluate each repeat's choice."
            )
        disp = pd.DataFrame(
            {
                "task": st["task"],
                "method": st["method"],
                "repeats": st["n_repeats"],
                "seeds": st["n_seeds"],
                "repeat means (%)": [", ".join(fmt_pct(v) for v in m) for m in st["repeat_means"]],
                "SD from search (pp)": [fmt_pct(v, 3) for v in st["sd_search"]],
            }
        )
        sec.table(
            "search_variance",
            st.drop(columns=["repeat_means"]),
            disp,
            caption="The spread of each cell's mean accuracy over independent repeats of its hyperparameter "
            "search (Bouthillier et al. 2021, 'Accounting for variance in machine learning "
            "benchmarks'): each repeat tunes with other tuning seeds and its choice runs on the same "
            "evaluation seeds; seed noise is removed (additive repeat x seed model). None of the "
            "intervals above contains it. With few repeats the estimate is rough.",
        )
        return sec

    def advisor(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section("How many seeds?")
        comp = ctx.comparisons()
        conf = comp[comp["family"] == "confirmatory"] if len(comp) else comp
        adv = stats.seed_advice(conf, o.deltas, alpha=o.alpha, power=o.power) if len(conf) else pd.DataFrame()
        if not len(adv):
            return sec.note("No comparison with two or more paired seeds: no variance to plan from.")
        adv = ctx.with_task(adv)
        keys = ["task", "method", "reference"]
        rows = []
        for _key, g in adv.groupby(keys, sort=False):
            r0 = g.iloc[0]
            row = {
                "task": r0["task"],
                "method": r0["method"],
                "vs": r0["reference"],
                "pairs now": r0["n_pairs"],
                "SD of Δ (pp)": fmt_pct(r0["sd_diff"]),
                "upper SD (pp)": fmt_pct(r0["sd_diff_upper"]),
                "Holm m": r0["comparisons"],
            }
            for r in g.to_dict("records"):
                label = (
                    "equivalence (true Δ=0, ±ROPE)"
                    if r.get("kind") == "equivalence"
                    else f"Δ={r['delta'] * 100:g}pp"
                    + (" (ROPE)" if r["is_rope"] else f" ({r['delta'] / r['rope']:g}×ROPE)")
                )
                row[label] = (
                    "below the ROPE: never 'better'"
                    if r.get("below_rope")
                    else " / ".join(_n(r[k]) for k in ("seeds_needed", "seeds_needed_upper_sd"))
                )
            rows.append(row)
        sec.text(
            f"Paired seeds needed for {o.power:.0%} power to detect a true difference Δ with the two-sided "
            f"paired t-test at α/m (m = the hypotheses in the Holm family, 2 per comparison: its worst case), and "
            "to show equivalence within the ROPE when the true difference is 0 (the verdict's interval-inside-ROPE "
            "claim), from the observed SD of the per-seed differences (noncentral t upper tails, numerical "
            "integration where scipy's is not finite; never fewer than 3 pairs, what a verdict needs). Each cell: "
            "at the observed SD / at its "
            f"{o.confidence:.0%} upper confidence bound (a pilot of a few seeds estimates the SD poorly). "
            "ffbench's convention: 3 seeds for smoke tests, 5 for exploratory grids, ≥10 or "
            "this number for a headline claim. The effects are the ROPE and twice it (unless set): a true "
            "difference smaller than the ROPE ends 'equivalent' as seeds are added, never 'better', so no "
            "seed count makes the verdict call it better."
        )
        sec.table("seed_advice", adv, pd.DataFrame(rows), caption="Seed-count advisor.")
        return sec

    def curves(self, ctx: ReportContext) -> Section:
        sec = Section("Learning curves")
        long = stats.curves_long(ctx.frame, ctx.factors, series=("val_acc", "test_acc"))
        if not len(long):
            return sec.note("No per-epoch curves recorded.")
        long = ctx.with_task(long)
        bands = stats.curve_bands(long, ["task", "method", "series"], ctx.options.confidence)
        sec.figure(
            "learning_curves",
            F.learning_curves(bands, hue="method", facet="task", style="series", style_order=["val_acc", "test_acc"]),
            caption="Validation (solid) and test (dashed) accuracy of each method's default inference rule per "
            f"epoch: mean over seeds with a {ctx.options.confidence:.0%} t band, clipped to 0-100%; "
            "panels share the accuracy axis.",
        )
        return sec

    def budget(self, ctx: ReportContext) -> Section:
        sec = Section("Tuning budget")
        if ctx.tuning is None or not len(ctx.tuning):
            return sec.note(
                "No tuning runs (role 'tuning') in this suite: no budget curves. Methods were run with "
                "their configured settings; a method that only wins after more tuning cannot be seen here."
            )
        tun, factors = stats.prepare(ctx.tuning, [f for f in ctx.factors if f in ctx.tuning] or None, "val_acc")
        b = stats.budget_curves(tun, "val_acc", factors=factors)
        if not len(b):
            return sec.note("Tuning runs hold no usable validation accuracy.")
        b = ctx.with_task(b)
        sec.text(
            "Best validation accuracy after k trials per method: the expected maximum of k trials drawn from "
            "the observed ones (Dodge et al. 2019; line) and the best so far in trial order (steps). Failed "
            "trials count as no improvement."
        )
        sec.figure("budget", F.budget_plot(b, hue="method", facet="task"), caption="Tuning budget curves.")
        last = b.sort_values("k").groupby(["task", "method"]).tail(1)
        sec.table(
            "budget",
            b,
            pd.DataFrame(
                {
                    "task": last["task"],
                    "method": last["method"],
                    "trials": last["trials"],
                    "failed": last["failures"],
                    "pruned": last["pruned"],
                    "best (%)": [fmt_pct(v) for v in last["best_so_far"]],
                }
            ),
            caption="Tuning trials per method and the best validation accuracy reached.",
        )
        return sec

    def compute(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section("Time and memory")
        quantities = {
            "epoch_time_s": "s / epoch",
            "images_per_s": "images / s",
            "saved_bytes_per_step": "activations saved for backward, MiB / step",
            "peak_mem_bytes": "peak GPU memory of a step, MiB",
        }
        long = stats.compute_table(ctx.frame, list(quantities), ["task", "method"], confidence=o.confidence)
        if len(long):
            long = long[(long["measurements"] > 0) | (long["no_backward"] > 0)]  # e.g. no peak memory on CPU
        if not len(long):
            return sec.note("No compute measurements recorded.")
        mib = long["quantity"].str.endswith("_bytes") | (long["quantity"] == "saved_bytes_per_step")
        for c in ("mean", "ci_low", "ci_high"):
            long.loc[mib, c] = long.loc[mib, c] / 2**20
        keys = ["task", "method", "executed"]
        rows: dict[tuple, dict] = {}
        for r in long.to_dict("records"):
            row = rows.setdefault(
                tuple(r[k] for k in keys),
                {**{k: r[k] for k in keys}, "runs": r["runs"], "independent measurements": r["measurements"]},
            )
            row[quantities[r["quantity"]]] = (
                "— (no backward pass)"
                if not r["measurements"] and r["no_backward"]
                else fmt_ci(r["mean"], r["ci_low"], r["ci_high"], 3, 1, sig=True)
                if np.isfinite(r["ci_low"])
                else fmt_sig(r["mean"], 3) + " (no interval: one measurement)"
            )
        batched = long["executed"] != "alone"
        sec.table(
            "compute",
            long,
            pd.DataFrame(rows.values()).fillna("—"),
            caption="Mean [t CI] over the independent measurements of the finished runs: one per run trained "
            "alone, one per batch of seeds trained stacked (its seeds share one step, so their equal "
            "figures are one measurement). 'executed' says how: a batched row's time and memory are "
            "its per-seed share (the stacked step's ÷ its seeds) and its images / s the stacked "
            "step's throughput over all its seeds, neither a seed's figure alone, so compare them "
            "only between rows executed alike. Training time excludes evaluation and is "
            "device-synchronised. Activations saved for backward: the peak bytes autograd holds for "
            "the backward pass over the first steps (saved-tensor hooks), not the whole memory; '—' "
            "for a method without a backward pass. Peak GPU memory: the device's peak during the "
            "training steps above the resident data and parameters (CUDA only; absent on the CPU).",
        )
        tables = {}
        for col, label in quantities.items():
            t = long[(long["quantity"] == col) & (long["measurements"] > 0)]
            if len(t):  # the figure tells executions apart by the panel label of each bar
                tables[label] = t.assign(task=[f"{k} · {e}" for k, e in zip(t["task"], t["executed"])])
        sec.figure(
            "compute",
            F.compute_plot(tables),
            caption="Time and memory per method (mean and CI over independent measurements); each bar is "
            "labelled with its task and how it was executed (batched: the per-seed share); each panel "
            "is a different quantity on its own scale.",
        )
        if batched.any():
            sec.note(
                "Some cells trained their seeds stacked (seed batching) and others alone: their times are "
                "not like for like. A batched row gives each seed's share of a stacked step; set `[suite] "
                "batch_seeds = false` to time every seed alone."
            )
        return sec

    def failures(self, ctx: ReportContext) -> Section:
        sec = Section("Failed and unfinished runs")
        bad = ctx.frame[ctx.frame["status"] != "done"]
        nan = ctx.frame[(ctx.frame["status"] == "done") & ~stats.ok_mask(ctx.frame, ctx.options.metric)]
        if not len(bad) and not len(nan):
            return sec.text("None: every run finished with a value.")
        rows = pd.concat([bad, nan])
        disp = pd.DataFrame(
            {
                "run": rows["run_id"],
                "task": rows["task"],
                "method": rows["method"],
                "seed": rows["seed"],
                "status": rows["status"],
                "attempts": rows.get("attempts"),
                "error": [
                    (str(e).strip().splitlines() or [""])[0][:160]
                    if isinstance(e, str)
                    else ("no metric" if s == "done" else "")
                    for e, s in zip(rows.get("error", [None] * len(rows)), rows["status"])
                ],
            }
        )
        sec.text(
            f"{int(rows['status'].isin(stats.FAILED).sum())} failed or diverged, "
            f"{int(rows['status'].isin(stats.UNFINISHED).sum())} not finished, {len(nan)} finished without "
            "a value (counted as failed). They are counted in every table above and excluded from the means; "
            "failures enter the verdicts through the failure rates and the sensitivity analysis."
        )
        sec.table("failures", rows.drop(columns=["curves", "test_correct_bits"], errors="ignore"), disp)
        return sec
