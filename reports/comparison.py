"""Report kind 'comparison': methods against the control, and across tasks.

Accuracy per cell with CIs; paired differences against the control with tests, effect sizes, corrected
p-values and verdicts (and all pairs, exploratory, when asked); average ranks, Friedman and an IQM
aggregate across tasks; the seed-count advisor; learning curves; tuning budget curves; time and memory;
and the list of failed or unfinished runs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ffbench import figures as F
from ffbench import stats
from ffbench.report import (ReportContext, ReportKind, Section, fmt_ci, fmt_num, fmt_p, fmt_pct, report_kind)


def _n(v) -> str:
    return ">10000" if v is None or pd.isna(v) else str(int(v))


def cells_display(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        **{k: cells[k].astype(str) for k in keys},
        "runs": cells["runs"], "n": cells["n"], "failed": cells["failures"], "missing": cells["missing"],
        "mean ± SD (%)": [f"{fmt_pct(m)} ± {fmt_pct(s)}" for m, s in zip(cells["mean"], cells["sd"])],
        "median (%)": [fmt_pct(v) for v in cells["median"]],
        "95% CI of mean (%)": [fmt_ci(np.nan, lo, hi).split(" ", 1)[-1] if np.isfinite(lo) else "—"
                               for lo, hi in zip(cells["ci_low"], cells["ci_high"])],
        "CI method": cells["ci_method"],
    })


def comparisons_display(comp: pd.DataFrame, task: bool = True) -> pd.DataFrame:
    return pd.DataFrame({
        **({"task": comp["task"]} if task and "task" in comp else {}),
        "method": comp["method"], "vs": comp["reference"], "pairs": comp["n_pairs"],
        "failed (m/ref)": [f"{a}/{b}" for a, b in zip(comp["failures_method"], comp["failures_reference"])],
        "Δ pp [95% CI]": [fmt_ci(d, lo, hi) for d, lo, hi in zip(comp["delta"], comp["ci_low"], comp["ci_high"])],
        "SD of Δ (pp)": [fmt_pct(v) for v in comp["sd_diff"]],
        "t (df)": [f"{fmt_num(t)} ({int(df)})" if np.isfinite(t) else "—" for t, df in zip(comp["t"], comp["df"])],
        "p_t": [fmt_p(p) for p in comp["p_t"]],
        "p adj": [f"{fmt_p(p)} ({c})" for p, c in zip(comp["p_adj"], comp["correction"])],
        "TOST p adj": [fmt_p(p) for p in comp["p_tost_adj"]],
        "Wilcoxon p": [fmt_p(p) + (" *" if note else "") for p, note in zip(comp["p_wilcoxon"], comp["wilcoxon_note"])],
        "Hedges' g [CI]": [fmt_ci(g, lo, hi, scale=1) for g, lo, hi in
                           zip(comp["hedges_g"], comp["g_ci_low"], comp["g_ci_high"])],
        "P(m>ref) [CI]": [fmt_ci(g, lo, hi, scale=1) for g, lo, hi in
                          zip(comp["ps"], comp["ps_ci_low"], comp["ps_ci_high"])],
        "ROPE (pp)": [fmt_pct(r) for r in comp["rope"]],
        "verdict": comp["verdict"], "why": comp["reason"],
    })


@report_kind("comparison", "Method comparison: accuracy per method, paired differences against the control with "
             "verdicts, ranks and an IQM aggregate across tasks, seed advice, learning and budget curves, compute")
class Comparison(ReportKind):
    title = "Method comparison"
    order = 10

    def applicable(self, ctx: ReportContext) -> str | None:
        return None if "method" in ctx.frame else "the results have no 'method' column"

    def build(self, ctx: ReportContext) -> list[Section]:
        return [self.accuracy(ctx), self.paired(ctx), *self.exploratory(ctx), self.across(ctx), self.advisor(ctx),
                self.curves(ctx), self.budget(ctx), self.compute(ctx), self.failures(ctx)]

    # ------------------------------------------------------------------
    def accuracy(self, ctx: ReportContext) -> Section:
        o = ctx.options
        cells = ctx.cells()
        keys = ["task", "method"]
        sec = Section("Accuracy per method")
        sec.table("cells", cells, cells_display(cells, keys),
                  caption=f"`{o.metric}` per cell over the finished runs (n); failed and missing runs are counted, "
                          f"not estimated. Mean with a {o.confidence:.0%} bootstrap CI ({o.n_resamples} resamples, "
                          f"seed {o.seed}).")
        ok = ctx.frame[stats.ok_mask(ctx.frame, o.metric)]
        sec.figure("accuracy", F.accuracy_by_method(cells, ok, value=o.metric, control=o.control,
                                                    ylabel=f"{o.metric} (%)"),
                   caption=f"Mean and {o.confidence:.0%} bootstrap CI per method (right of each column); grey dots: "
                           f"the individual seeds. The control `{o.control}` is red.")
        return sec

    def paired(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section(f"Paired differences against the control ({o.control})")
        if o.control not in ctx.methods and not o.confirmatory:
            return sec.note(f"The control `{o.control}` has no runs in this suite (methods: {', '.join(ctx.methods)}); "
                            "set the control (`--control`) to compare.")
        comp = ctx.comparisons()
        conf = comp[comp["family"] == "confirmatory"] if len(comp) else comp
        if not len(conf):
            return sec.note("No confirmatory comparison could be formed (no task has both the method and the control).")
        counts = conf["verdict"].value_counts()
        sec.text(f"{len(conf)} confirmatory comparison(s) (family: Holm over all {len(conf)}): "
                 + ", ".join(f"**{counts.get(v, 0)} {v}**" for v in stats.VERDICTS) + ". "
                 "Δ = method − control, in percentage points, paired by seed; positive = the method is more accurate.")
        sec.table("comparisons", conf, comparisons_display(conf),
                  caption=f"Paired comparisons. CI: {o.confidence:.0%} bootstrap of the mean paired difference "
                          f"({conf['ci_method'].iloc[0]}, {o.n_resamples} resamples, seed {o.seed}); p_t: paired "
                          "t-test; p adj: Holm-corrected; TOST p adj: equivalence test against ±ROPE, Holm-corrected; "
                          f"Wilcoxon signed-rank p, * = fewer than {stats.WILCOXON_FLOOR} pairs (cannot reach p < 0.05).")
        sec.figure("differences", F.paired_differences(conf),
                   caption="Paired difference to the control with its bootstrap CI; shaded: the ROPE; colour: verdict.")
        small = conf[conf["n_pairs"] < stats.WILCOXON_FLOOR]
        if len(small):
            sec.note(f"{len(small)} comparison(s) rest on fewer than {stats.WILCOXON_FLOOR} paired seeds: the "
                     "Wilcoxon test cannot reach significance there and bootstrap intervals are too narrow at n ≤ 5 "
                     "(which is why a verdict also needs the t-based test).")
        return sec

    def exploratory(self, ctx: ReportContext) -> list[Section]:
        comp = ctx.comparisons()
        if not len(comp) or not (comp["family"] == "exploratory").any():
            return []
        ex = comp[comp["family"] == "exploratory"]
        sec = Section("All pairs (exploratory)")
        sec.text("Exploratory screening of every other pair of methods; Benjamini–Hochberg (false discovery rate) "
                 f"over these {len(ex)} comparisons. Treat as hypotheses for a confirmatory suite, not as claims.")
        sec.table("pairs", ex, comparisons_display(ex), caption="Exploratory pairwise comparisons (BH-corrected).")
        return [sec]

    def across(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section("Across tasks")
        mat = stats.task_matrix(ctx.frame, o.metric, factors=ctx.factors)
        if mat.shape[0] < 2 or mat.shape[1] < 2:
            return sec.note(f"{mat.shape[0]} complete task(s) × {mat.shape[1]} method(s): the cross-task statistics "
                            "(average ranks, Friedman, aggregate) need at least 2 tasks with every method; the "
                            "per-task comparisons above are the result.")
        fr = stats.friedman(mat, o.alpha)
        ranks = pd.DataFrame({"method": list(fr["ranks"]), "average rank": [round(v, 3) for v in fr["ranks"].values()]})
        if np.isfinite(fr["chi2"]):
            sec.text(f"Tasks (blocks): {fr['N']}; methods: {fr['k']}. Friedman χ² = {fmt_num(fr['chi2'])}, "
                     f"p = {fmt_p(fr['p'])}; Iman–Davenport F = {fmt_num(fr['F_iman_davenport'])}, "
                     f"p = {fmt_p(fr['p_iman_davenport'])}; Nemenyi critical difference at α = {o.alpha:g}: "
                     f"{fmt_num(fr['cd_nemenyi'])} ranks (Demšar 2006; q/√2 from the studentized range).")
        else:
            sec.text(f"Tasks (blocks): {fr['N']}; methods: {fr['k']}. Average ranks only.")
        if fr["note"]:
            sec.note(fr["note"])
        sec.table("ranks", ranks, caption="Average rank over tasks (1 = best) of the per-task mean accuracy.")
        sec.figure("ranks", F.rank_plot(fr["ranks"], fr["cd_nemenyi"]), caption="Average ranks and the Nemenyi CD.")
        agg = stats.aggregate(ctx.frame, o.metric, control=o.control, factors=ctx.factors,
                              confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed)
        if len(agg):
            disp = pd.DataFrame({"method": agg["method"], "tasks": agg["tasks"], "runs": agg["runs"],
                                 "IQM [CI]": [fmt_ci(v, lo, hi, 3, 1) for v, lo, hi in
                                              zip(agg["iqm"], agg["iqm_ci_low"], agg["iqm_ci_high"])],
                                 "mean [CI]": [fmt_ci(v, lo, hi, 3, 1) for v, lo, hi in
                                               zip(agg["mean"], agg["mean_ci_low"], agg["mean_ci_high"])],
                                 f"P(improvement over {o.control})": [fmt_num(v, 3) for v in agg["prob_improvement"]]})
            sec.table("aggregate", agg, disp,
                      caption=f"Normalised score (acc − chance) / (mean {o.control} acc − chance) per run, chance = "
                              f"1/classes; IQM and mean over all tasks × seeds with stratified-bootstrap "
                              f"{o.confidence:.0%} CIs (seeds resampled within tasks, {o.n_resamples} resamples, seed "
                              f"{o.seed}; the tasks are fixed, so the claim is about these tasks).")
            sec.figure("aggregate", F.aggregate_plot(agg, control=o.control), caption="Aggregate normalised scores.")
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
        for key, g in adv.groupby(keys, sort=False):
            r0 = g.iloc[0]
            row = {"task": r0["task"], "method": r0["method"], "vs": r0["reference"], "pairs now": r0["n_pairs"],
                   "SD of Δ (pp)": fmt_pct(r0["sd_diff"]), "upper SD (pp)": fmt_pct(r0["sd_diff_upper"]),
                   "Holm m": r0["comparisons"]}
            for r in g.to_dict("records"):
                label = f"Δ={r['delta'] * 100:g}pp" + (" (ROPE)" if r["is_rope"] else "")
                row[label] = " / ".join(_n(r[k]) for k in ("seeds_needed", "seeds_needed_upper_sd"))
            rows.append(row)
        sec.text(f"Paired seeds needed for {o.power:.0%} power to detect a true difference Δ with the two-sided "
                 f"paired t-test at α/m (m = the Holm family size, its worst case), from the observed SD of the "
                 f"per-seed differences (noncentral t, statsmodels TTestPower). Each cell: at the observed SD / at its "
                 f"{o.confidence:.0%} upper confidence bound (a pilot of a few seeds estimates the SD poorly). "
                 "Harness policy (harness-notes §3.2): 3 seeds for smoke tests, 5 for exploratory grids, ≥10 or "
                 "this number for a headline claim.")
        sec.table("seed_advice", adv, pd.DataFrame(rows), caption="Seed-count advisor.")
        return sec

    def curves(self, ctx: ReportContext) -> Section:
        sec = Section("Learning curves")
        long = stats.curves_long(ctx.frame, ctx.factors, series=("val_acc", "test_acc"))
        if not len(long):
            return sec.note("No per-epoch curves recorded.")
        long = ctx.with_task(long)
        bands = stats.curve_bands(long, ["task", "method", "series"], ctx.options.confidence)
        sec.figure("learning_curves", F.learning_curves(bands, hue="method", facet="task", style="series",
                                                        style_order=["val_acc", "test_acc"]),
                   caption="Validation (solid) and test (dashed) accuracy of each method's default inference rule per "
                           f"epoch: mean over seeds with a {ctx.options.confidence:.0%} t band.")
        return sec

    def budget(self, ctx: ReportContext) -> Section:
        sec = Section("Tuning budget")
        if ctx.tuning is None or not len(ctx.tuning):
            return sec.note("No tuning runs (role 'tuning') in this suite: no budget curves. Methods were run with "
                            "their configured settings; a method that only wins after more tuning cannot be seen here.")
        tun, factors = stats.prepare(ctx.tuning, [f for f in ctx.factors if f in ctx.tuning] or None, "val_acc")
        b = stats.budget_curves(tun, "val_acc", factors=factors)
        if not len(b):
            return sec.note("Tuning runs hold no usable validation accuracy.")
        b = ctx.with_task(b)
        sec.text("Best validation accuracy after k trials per method: the expected maximum of k trials drawn from "
                 "the observed ones (Dodge et al. 2019; line) and the best so far in trial order (steps). Failed "
                 "trials count as no improvement.")
        sec.figure("budget", F.budget_plot(b, hue="method", facet="task"), caption="Tuning budget curves.")
        last = b.sort_values("k").groupby(["task", "method"]).tail(1)
        sec.table("budget", b, pd.DataFrame({"task": last["task"], "method": last["method"], "trials": last["trials"],
                                             "failed": last["failures"],
                                             "pruned": last["pruned"], "best (%)": [fmt_pct(v) for v in last["best_so_far"]]}),
                  caption="Tuning trials per method and the best validation accuracy reached.")
        return sec

    def compute(self, ctx: ReportContext) -> Section:
        o = ctx.options
        sec = Section("Time and memory")
        df = ctx.frame.copy()
        quantities = {"s / epoch": "epoch_time_s", "images / s": "images_per_s",
                      "saved activations MiB / step": "saved_bytes_per_step", "peak GPU memory MiB": "peak_mem_bytes"}
        tables, rows = {}, {}
        for label, col in quantities.items():
            if col not in df:
                continue
            v = pd.to_numeric(df[col], errors="coerce").astype(float)
            if "bytes" in col:
                v = v / 2**20
            df[f"_{col}"] = v
            t = stats.cell_table(df, f"_{col}", ["task", "method"], confidence=o.confidence, n_resamples=o.n_resamples,
                                 rng=o.seed)
            tables[label] = t
            for r in t.to_dict("records"):
                rows.setdefault((r["task"], r["method"]), {"task": r["task"], "method": r["method"], "n": r["n"]})[label] = (
                    fmt_ci(r["mean"], r["ci_low"], r["ci_high"], 3, 1, sig=True))
        if not tables:
            return sec.note("No compute measurements recorded.")
        sec.table("compute", pd.concat([t.assign(quantity=k) for k, t in tables.items()]), pd.DataFrame(rows.values()),
                  caption="Mean [bootstrap CI] over the finished runs. Training time excludes evaluation and is "
                          "device-synchronised; saved activations are the peak bytes held for backward over the first "
                          "steps (autograd saved-tensor hooks); peak GPU memory is measured on CUDA only.")
        sec.figure("compute", F.compute_plot(tables), caption="Time and memory per method (mean and CI).")
        if "peak_mem_bytes" in df and not np.isfinite(pd.to_numeric(df["peak_mem_bytes"], errors="coerce")).any():
            sec.note("Peak GPU memory is empty: these runs were on the CPU.")
        return sec

    def failures(self, ctx: ReportContext) -> Section:
        sec = Section("Failed and unfinished runs")
        bad = ctx.frame[ctx.frame["status"] != "done"]
        nan = ctx.frame[(ctx.frame["status"] == "done") & ~stats.ok_mask(ctx.frame, ctx.options.metric)]
        if not len(bad) and not len(nan):
            return sec.text("None: every run finished with a value.")
        rows = pd.concat([bad, nan])
        disp = pd.DataFrame({"run": rows["run_id"], "task": rows["task"], "method": rows["method"], "seed": rows["seed"],
                             "status": rows["status"], "attempts": rows.get("attempts"),
                             "error": [(str(e).strip().splitlines() or [""])[0][:160] if isinstance(e, str) else
                                       ("no metric" if s == "done" else "") for e, s in zip(rows.get("error", [None] * len(rows)), rows["status"])]})
        sec.text(f"{int((rows['status'] == 'failed').sum())} failed, "
                 f"{int(rows['status'].isin(['pending', 'running']).sum())} not finished, {len(nan)} finished without "
                 "a value. They are counted in every table above and excluded from the estimates.")
        sec.table("failures", rows.drop(columns=["curves"], errors="ignore"), disp)
        return sec
