"""Report kind 'small-data': accuracy as the training set shrinks (the ``train_size`` axis).

Per group of the other factors (dataset, backbone, any other axis): each method's mean accuracy per size
with its t interval (a figure on a log axis and a table), the paired gap of every method to the control
and to the matched baseline ``bp.deepsup`` at each size with the comparison report's verdicts (one Holm
family over the page's comparisons), and the sizes between which the gap to the control changes sign.
The computations are the functions below; the kind only lays them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis import figures as F
from ffbench.analysis.document import Section, fmt_ci
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext, verdict_label, verdicts_display
from ffbench.record.resultset import base_method
from ffbench.reports.comparison import cells_display

AXIS = "train_size"
FULL = "full"  # the whole training split
MATCHED = "bp.deepsup"  # the architecture-matched BP baseline


def size_value(level: Any) -> int | None:
    """The number of images a level asks for; None for 'full' (the whole split)."""
    return None if str(level) == FULL else int(level)


def size_order(levels: Sequence) -> list:
    """Sizes ascending, 'full' last."""
    return sorted(levels, key=lambda v: (1, 0) if size_value(v) is None else (0, size_value(v)))


def full_size(frame: pd.DataFrame, axis: str = AXIS) -> float | None:
    """The number of images the 'full' runs trained on (the median of their ``n_train``), if recorded."""
    if "n_train" not in frame:
        return None
    n = pd.to_numeric(frame.loc[frame[axis].astype(str) == FULL, "n_train"], errors="coerce").astype(float)
    n = n[np.isfinite(n)]
    return float(n.median()) if len(n) else None


def size_positions(frame: pd.DataFrame, axis: str = AXIS) -> dict[Any, float]:
    """Where each level sits on the size axis: the size itself; 'full' at ``full_size``, else at twice
    the largest size (after it on a log axis)."""
    levels = size_order(stats.levels_of(frame, axis))
    sizes = [size_value(v) for v in levels if size_value(v) is not None]
    full = full_size(frame, axis)
    return {
        v: float(size_value(v)) if size_value(v) is not None else full or 2.0 * max(sizes, default=1) for v in levels
    }


def size_label(level: Any, n_full: float | None = None) -> str:
    """'500', or 'full (54000)' when the full split's size is known."""
    if size_value(level) is not None:
        return str(size_value(level))
    return f"{FULL} ({int(n_full)})" if n_full else FULL


def gap_pairs(methods: Sequence[str], control: str, matched: str = MATCHED) -> list[tuple[str, str]]:
    """The page's comparisons: every method against the control, and every other method against the
    matched baseline (or each of its variants, e.g. ``bp.deepsup[head=match:sff]``) when it has runs."""
    pairs = [(m, control) for m in methods if m != control] if control in methods else []
    baselines = [m for m in methods if base_method(m) == matched]
    pairs += [(m, b) for b in baselines for m in methods if m != control and m not in baselines]
    return pairs


def size_gaps(
    frame: pd.DataFrame, metric: str, factors: Sequence[str], *, control: str, **options: Any
) -> pd.DataFrame:
    """The paired gaps (``stats.compare``: paired by seed, which fixes the data subset, t interval, ROPE,
    one Holm family over all the pairs of ``gap_pairs`` at every size). ``options``: compare's rope,
    alpha, confidence, n_resamples, rng."""
    methods = sorted(frame["method"].astype(str).unique())
    pairs = gap_pairs(methods, control)
    if not pairs:
        return pd.DataFrame()
    return stats.compare(frame, metric, control=control, factors=factors, confirmatory=pairs, **options)


def crossings(sizes: Sequence, deltas: Sequence[float]) -> list[tuple[Any, Any, int, int]]:
    """Where the sign of the mean difference changes between consecutive sizes (in ``sizes`` order;
    sizes with a zero or undefined difference are skipped): (last size of the old sign, first size of the
    new sign, old sign, new sign)."""
    pts = [(s, int(np.sign(d))) for s, d in zip(sizes, deltas) if np.isfinite(d) and d != 0]
    return [(a, b, sa, sb) for (a, sa), (b, sb) in zip(pts, pts[1:]) if sa != sb]


def crossing_text(
    method: str, reference: str, sizes: Sequence, deltas: Sequence[float], label: Callable[[Any], str] = str
) -> str:
    """'sff is ahead of bp up to 1000 images and behind from 5000', or 'no crossing: ...'."""
    pts = [(s, int(np.sign(d))) for s, d in zip(sizes, deltas) if np.isfinite(d) and d != 0]
    if not pts:
        return f"{method} vs {reference}: no size with a non-zero mean difference"
    runs: list[list] = []  # [sign, first size, last size] of each stretch of one sign
    for s, sign in pts:
        if runs and runs[-1][0] == sign:
            runs[-1][2] = s
        else:
            runs.append([sign, s, s])
    word, relation = {1: "ahead", -1: "behind"}, {1: "ahead of", -1: "behind"}
    if len(runs) == 1:
        return f"{method} vs {reference}: no crossing ({method} is {relation[runs[0][0]]} {reference} at every size)"
    parts = [f"{method} is {relation[runs[0][0]]} {reference} up to {label(runs[0][2])} images"]
    for sign, first, last in runs[1:-1]:
        parts.append(
            f"{word[sign]} at {label(first)}"
            if first == last
            else f"{word[sign]} from {label(first)} up to {label(last)}"
        )
    parts.append(f"{word[runs[-1][0]]} from {label(runs[-1][1])}")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def gap_crossings(
    gaps: pd.DataFrame, group_cols: Sequence[str], axis: str = AXIS, label: Callable[[Any], str] = str
) -> pd.DataFrame:
    """Per group, method and reference: the crossings of the mean paired difference over the sizes."""
    if not len(gaps):
        return pd.DataFrame()
    rows = []
    for key, g in gaps.groupby([*group_cols, "method", "reference"], sort=True):
        g = g.set_index(axis).loc[size_order(list(g[axis]))]
        sizes, deltas = list(g.index), g["delta"].to_numpy(float)
        cross = crossings(sizes, deltas)
        rows.append(
            {
                **dict(zip([*group_cols, "method", "reference"], key)),
                "crossings": len(cross),
                "between": "; ".join(f"{label(a)} and {label(b)}" for a, b, _, _ in cross) or "no crossing",
                "text": crossing_text(key[-2], key[-1], sizes, deltas, label),
            }
        )
    return pd.DataFrame(rows)


def _group_label(key: Sequence) -> str:
    return " / ".join(str(k) for k in key if str(k) != stats.NA) or "all"


def _groups(df: pd.DataFrame, cols: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    return [(stats.group_key(k), g) for k, g in df.groupby(list(cols), sort=True)] if cols else [((), df)]


@report_kind(
    "small-data",
    "Small data: accuracy against the training-set size per method, the paired gap to "
    "the control and to bp.deepsup at each size with verdicts, and where the gap changes sign",
)
class SmallData(ReportKind):
    title = "Small data"
    order = 25

    def applicable(self, ctx: ReportContext) -> str | None:
        if AXIS not in ctx.factors:
            return f"the results have no '{AXIS}' factor (factors: {', '.join(ctx.factors)})"
        return None if stats.levels_of(ctx.frame, AXIS) else f"no run has a '{AXIS}' level"

    def data(self, ctx: ReportContext) -> dict[str, Any]:
        """The cells, gaps and size axis of every group (computed once: the headline reads them too)."""
        o = ctx.options

        def compute():
            frame = ctx.frame[ctx.frame[AXIS] != stats.NA]
            others = [c for c in ctx.task_cols if c != AXIS]
            # an axis that applies to some methods only labels their lines ('bp.deepsup[head=match:sff]'), so
            # every method of a dataset and backbone shares one figure
            partial = [c for c in others if c not in stats.BASE_FACTORS and (frame[c] == stats.NA).any()]
            groups = [c for c in others if c not in partial]
            cells = stats.cell_table(
                frame.assign(method=stats.treatments(frame, "method", partial)),
                o.metric,
                [*groups, AXIS, "method"],
                confidence=o.confidence,
                n_resamples=o.n_resamples,
                rng=o.seed,
            )
            gaps = size_gaps(
                frame,
                o.metric,
                ctx.factors,
                control=o.control,
                rope=o.rope,
                alpha=o.alpha,
                confidence=o.confidence,
                n_resamples=o.n_resamples,
                rng=o.seed,
            )
            if len(gaps) and partial:
                gaps["method"] = stats.treatments(gaps, "method", partial)
            axis = {k: (size_positions(g), full_size(g)) for k, g in _groups(frame, groups)}
            return {"frame": frame, "cells": cells, "gaps": gaps, "axis": axis, "groups": groups}

        return ctx.cached("small-data", compute)

    def headline(self, ctx: ReportContext) -> list[str]:
        """Per group, each method's gap to the control at the smallest size."""
        d = self.data(ctx)
        gaps, control = d["gaps"], ctx.options.control
        if not len(gaps):
            return []
        lines = []
        for key, g in _groups(gaps[gaps["reference"] == control], d["groups"]):
            small = size_order(list(g[AXIS].unique()))[0]
            parts = [
                f"{r['method']} {fmt_ci(r['delta'], r['dec_low'], r['dec_high'])} pp, {verdict_label(r)}"
                for r in g[g[AXIS] == small].sort_values("method").to_dict("records")
            ]
            lines.append(
                f"**Small data, {_group_label(key)}: gap to {control} at "
                f"{size_label(small, d['axis'][key][1])} training images** (Δ [decision CI]): " + "; ".join(parts) + "."
            )
        return lines

    def build(self, ctx: ReportContext) -> list[Section]:
        o = ctx.options
        d = self.data(ctx)
        gaps, groups = d["gaps"], d["groups"]
        fam = int(gaps["in_family"].sum()) if len(gaps) else 0
        intro = Section("Design")
        intro.text(
            "\n".join(
                [
                    f"- Sizes: {', '.join(map(str, size_order(stats.levels_of(d['frame'], AXIS))))} training images per "
                    "run, a class-balanced subset drawn per seed; 'full' is the whole training split, plotted at the number "
                    "of images its runs trained on (else after the largest size).",
                    f"- Accuracy: `{o.metric}` per size and method over the surviving runs, mean with its {o.confidence:.0%} "
                    "t interval over seeds (the figure's bands clipped to 0-100%).",
                    f"- Gaps: each method against the control `{o.control}`"
                    + (
                        f" and against the matched baseline `{MATCHED}`"
                        if MATCHED in map(base_method, ctx.methods)
                        else ""
                    )
                    + ", Δ = method − reference in pp, paired by seed (the same seed draws the same data subset for every "
                    f"method). Verdicts as in the comparison report: one Holm family over the {fam} comparisons of this "
                    f"page that can reach a verdict ({2 * fam} hypotheses: difference and equivalence), read off the "
                    f"decision interval; ROPE {ctx.rope_text()}.",
                    "- Crossing: the sizes between which the sign of the mean paired difference changes (a description "
                    "of the point estimates; the verdicts say which differences are resolved).",
                ]
            )
        )
        return [intro] + [
            self.group(ctx, _group_label(key), g, stats.rows_where(gaps, groups, key), *d["axis"][key])
            for key, g in _groups(d["cells"], groups)
        ]

    def group(
        self,
        ctx: ReportContext,
        label: str,
        cells: pd.DataFrame,
        gaps: pd.DataFrame,
        positions: dict[Any, float],
        n_full: float | None,
    ) -> Section:
        o = ctx.options
        order = size_order(list(positions))
        name = partial(size_label, n_full=n_full)
        cells = cells.assign(
            x=[positions[v] for v in cells[AXIS]],
            size_label=[name(v) for v in cells[AXIS]],
            _order=[order.index(v) for v in cells[AXIS]],
        ).sort_values(["_order", "method"])
        sec = Section(f"Small data: {label}")
        sec.figure(
            f"{label}-sizes",
            F.size_curves(cells[cells["n"] > 0], title=label, ylabel=f"{o.metric} (%)"),
            caption=f"Mean `{o.metric}` against the training-set size (log axis) with its {o.confidence:.0%} t "
            "band over seeds, clipped to 0-100%; one line per method.",
        )
        sec.table(
            f"{label}-cells",
            cells.drop(columns="_order"),
            cells_display(cells.assign(**{AXIS: cells["size_label"]}), [AXIS, "method"]),
            caption="Per size and method over the surviving runs (n seeds): mean ± SD and the t interval of "
            "the mean; failed and missing runs counted, not estimated.",
        )
        if not len(gaps):
            return sec.note(f"No gap can be formed: neither the control `{o.control}` nor `{MATCHED}` has runs here.")
        gaps = gaps.assign(_order=[order.index(v) for v in gaps[AXIS]]).sort_values(["reference", "method", "_order"])
        shown = verdicts_display(gaps, task=False)
        shown.insert(1, "size", [name(v) for v in gaps[AXIS]])
        shown.insert(
            4,
            f"Δ pp [{o.confidence:.0%} CI]",
            [fmt_ci(v, lo, hi) for v, lo, hi in zip(gaps["delta"], gaps["ci_low"], gaps["ci_high"])],
        )
        sec.table(
            f"{label}-gaps",
            gaps.drop(columns="_order"),
            shown,
            caption=f"Gap per size, paired by seed: the mean paired difference with its {o.confidence:.0%} t "
            "interval, the decision interval the verdict is read from (Holm over this page's family), "
            "the Bayesian correlated t-test's posterior, and the failures of both sides with exact 95% "
            "intervals.",
        )
        cross = gap_crossings(gaps.drop(columns="_order"), [], AXIS, name)
        sec.text(
            "**Crossing points** (sign of the mean paired difference):\n\n" + "\n".join(f"- {t}" for t in cross["text"])
        )
        return sec
