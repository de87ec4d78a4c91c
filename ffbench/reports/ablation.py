"""Report kind 'ablation': main effects and two-way interactions of the ablation axes.

Per group of the non-axis factors (method, dataset, backbone): the cell means over the axis levels, an
OLS model of the metric on the axes' main effects and two-way interactions with the seed as a blocking
factor (Type III F-tests under sum coding, BH-corrected as exploratory screening), each effect estimated
both from the model and by a stratified bootstrap over seeds, and interaction plots of marginal means.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis import figures as F
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_p, fmt_pct
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext

MAX_INTERACTION_PLOTS = 6


def varying_axes(ctx: ReportContext, frame: pd.DataFrame | None = None) -> list[str]:
    """Axes with at least two levels (not counting '-', where the axis does not apply)."""
    frame = ctx.frame if frame is None else frame
    return [a for a in ctx.axes if len(stats.levels_of(frame, a)) > 1]


@report_kind(
    "ablation",
    "Factorial ablation: main effects and two-way interactions of each axis (OLS with seed "
    "blocks and a stratified bootstrap), interaction plots",
)
class Ablation(ReportKind):
    title = "Factorial ablation"
    order = 20

    def applicable(self, ctx: ReportContext) -> str | None:
        if not varying_axes(ctx):
            return "no ablation axis with more than one level (factors: " + ", ".join(ctx.factors) + ")"
        return None

    def groups(self, ctx: ReportContext) -> list[tuple[str, pd.DataFrame, list[str]]]:
        """(label, runs, varying axes) per group of the non-axis factors; axes empty where none varies."""
        axes = varying_axes(ctx)
        group_cols = [f for f in ("method", "dataset", "backbone") if f in ctx.frame] + [
            a for a in ctx.axes if a not in axes
        ]
        out = []
        for key, g in ctx.frame.groupby(group_cols, sort=True):
            label = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if str(k) != stats.NA)
            out.append((label, g, varying_axes(ctx, g)))
        return out

    def model(self, ctx: ReportContext, label: str, g: pd.DataFrame, axes: list[str]):
        """The OLS model and the effects of one group (computed once: the headline reads them too)."""
        o = ctx.options

        def compute():
            terms, info = stats.ablation_model(g, o.metric, axes, confidence=o.confidence)
            if len(terms) and "p" in terms:
                tests = terms["kind"] != "block"
                terms.loc[tests, "p_bh"] = stats.adjust_pvalues(terms.loc[tests, "p"], "fdr_bh")
            effects = stats.ablation_effects(
                g, o.metric, axes, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed, model=(terms, info)
            )
            return terms, info, effects

        return ctx.cached(f"ablation.{label}", compute)

    def headline(self, ctx: ReportContext) -> list[str]:
        """The largest main effect of each group, with its interval."""
        parts = []
        for label, g, axes in self.groups(ctx):
            if not axes:
                continue
            _, _, effects = self.model(ctx, label, g, axes)
            main = effects[effects["kind"] == "main"] if len(effects) and "kind" in effects else effects
            if not len(main) or not main["estimate"].notna().any():
                continue
            r = main.loc[main["estimate"].abs().idxmax()]
            parts.append(
                f"{label}: {r['axis']} {r['level']} vs {r['reference']} "
                f"{fmt_ci(r['estimate'], r['ci_low'], r['ci_high'])} pp"
            )
        return (
            [f"**Largest main effect per group** ({ctx.options.confidence:.0%} CI): " + "; ".join(parts) + "."]
            if parts
            else []
        )

    def build(self, ctx: ReportContext) -> list[Section]:
        o = ctx.options
        axes = varying_axes(ctx)
        levels = {a: stats.levels_of(ctx.frame, a) for a in axes}
        intro = Section("Design")
        intro.text(
            "\n".join(
                [f"- `{a}`: {', '.join(map(str, lv))} (reference level: {lv[0]})" for a, lv in levels.items()]
                + [
                    f"- Every effect is a difference in `{o.metric}` (pp) between a level and the axis's reference level, "
                    "averaged with equal weight over the other axes' level combinations; an interaction is the difference "
                    "of differences. Both estimates pair runs by seed (common random numbers).",
                    f"- OLS: `{o.metric}` ~ main effects + all two-way interactions of the axes + seed (block), sum-to-zero "
                    f"coding; F-tests per term (Type III), t intervals ({o.confidence:.0%}) for the effect contrasts; "
                    "p-values Benjamini–Hochberg-corrected within each group as exploratory screening. Three-way and "
                    "higher interactions are left in the residual.",
                    f"- Stratified bootstrap: seeds resampled within each stratum of the other axes' levels "
                    f"({o.n_resamples} resamples, seed {o.seed}, percentile interval).",
                ]
            )
        )
        seeds = ctx.frame[stats.ok_mask(ctx.frame, o.metric)].groupby(ctx.factors)["seed"].nunique()
        if len(seeds) and seeds.min() < stats.WILCOXON_FLOOR:
            intro.note(
                f"Some cells have only {int(seeds.min())} usable seed(s): bootstrap intervals from so few seeds "
                "are too narrow (they cannot reach beyond the observed values); read the OLS t intervals, "
                "and treat every effect here as exploratory."
            )
        sections = [intro]
        without = []
        for label, g, g_axes in self.groups(ctx):
            if g_axes:
                sections.append(self.group(ctx, label, g, g_axes))
            else:
                without.append(label)
        if without:
            intro.note(
                "Groups in which no axis varies (the axes do not apply to them, or take one level): "
                + "; ".join(without)
                + "."
            )
        return sections

    def group(self, ctx: ReportContext, label: str, g: pd.DataFrame, axes: list[str]) -> Section:
        o = ctx.options
        sec = Section(f"Ablation: {label}")
        g_axes = axes
        cells = stats.cell_table(g, o.metric, g_axes, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed)
        disp = pd.DataFrame(
            {
                **{a: cells[a].astype(str) for a in g_axes},
                "runs": cells["runs"],
                "n": cells["n"],
                "failed": cells["failures"],
                "missing": cells["missing"],
                "mean [CI] (%)": [
                    fmt_ci(m, lo, hi) for m, lo, hi in zip(cells["mean"], cells["ci_low"], cells["ci_high"])
                ],
                "SD (%)": [fmt_pct(v) for v in cells["sd"]],
            }
        )
        sec.table(
            f"{label}-cells", cells, disp, caption=f"Cells of `{label}`: mean with {o.confidence:.0%} bootstrap CI."
        )
        terms, info, effects = self.model(ctx, label, g, g_axes)
        if len(terms) and "p" in terms:
            tdisp = pd.DataFrame(
                {
                    "term": terms["term"],
                    "kind": terms["kind"],
                    "df": [
                        f"{fmt_num(a, 0)}, {fmt_num(b, 0)}"
                        for a, b in zip(terms["df_num"], terms.get("df_denom", np.nan))
                    ],
                    "F": [fmt_num(v) for v in terms.get("F", np.nan)],
                    "p": [fmt_p(v) for v in terms["p"]],
                    "p (BH)": [fmt_p(v) for v in terms.get("p_bh", np.nan)],
                    "partial η²": [fmt_num(v, 3) for v in terms.get("partial_eta2", np.nan)],
                    "note": terms.get("note", ""),
                }
            )
            sec.table(
                f"{label}-anova",
                terms,
                tdisp,
                caption=f"OLS over n = {info['n']} runs ({info.get('parameters')} parameters, residual df "
                f"{fmt_num(info.get('df_resid'), 0)}, R² = {fmt_num(info.get('r2'), 3)}); F-test of "
                "each term's coefficients.",
            )
        if info.get("note"):
            sec.note(f"OLS: {info['note']}. The stratified-bootstrap effects below do not need the model.")
        if len(effects):
            edisp = pd.DataFrame(
                {
                    "effect": [f"{r['axis']}: {r['level']} vs {r['reference']}" for r in effects.to_dict("records")],
                    "kind": effects["kind"],
                    "Δ pp [CI]": [
                        fmt_ci(v, lo, hi)
                        for v, lo, hi in zip(effects["estimate"], effects["ci_low"], effects["ci_high"])
                    ],
                    "CI method": effects["ci_method"],
                    "bootstrap Δ pp [CI]": [
                        fmt_ci(v, lo, hi)
                        for v, lo, hi in zip(effects["estimate_boot"], effects["ci_low_boot"], effects["ci_high_boot"])
                    ],
                    "strata": effects["strata"],
                    "pairs": effects["pairs"],
                    "OLS p": [fmt_p(v) for v in effects.get("p_ols", np.nan)],
                    "OLS p (BH)": [fmt_p(v) for v in effects.get("p_ols_bh", np.nan)],
                }
            )
            sec.table(
                f"{label}-effects",
                effects,
                edisp,
                caption="Main effects and two-way interactions. Δ [CI]: the OLS contrast with its t interval "
                "(seed as block; calibrated with few seeds), or the stratified bootstrap where the model "
                "has no residual degrees of freedom; the bootstrap column is a non-parametric check (its "
                "percentile interval is too narrow with few seeds).",
            )
            sec.figure(
                f"{label}-effects",
                F.effects_plot(effects, title=label),
                caption="Effects with intervals: stratified bootstrap (dark) and OLS (light).",
            )
        for a in g_axes if len(g_axes) == 1 else []:
            means = stats.marginal_means(
                g, o.metric, [a], g_axes, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed
            )
            sec.figure(
                f"{label}-{a}",
                F.interaction_plot(means, a, None, title=label),
                caption=f"Mean per level of `{a}` with stratified-bootstrap CIs.",
            )
        for i, (a, b) in enumerate(itertools.combinations(g_axes, 2)):
            if i >= MAX_INTERACTION_PLOTS:
                sec.note(
                    f"Interaction plots shown for the first {MAX_INTERACTION_PLOTS} axis pairs only; every "
                    "interaction is in the effects table."
                )
                break
            means = stats.marginal_means(
                g, o.metric, [a, b], g_axes, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed
            )
            sec.figure(
                f"{label}-{a}-x-{b}",
                F.interaction_plot(means, a, b, title=label),
                caption=f"Interaction `{a}` × `{b}`: marginal means (averaged over the other axes) with "
                "stratified-bootstrap CIs; non-parallel lines indicate an interaction.",
            )
        return sec
