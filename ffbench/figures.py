"""Figures: one function per figure type, each taking what ``ffbench.stats`` returned (tidy DataFrames)
and returning a matplotlib ``Figure``. Nothing is estimated here: means, intervals and effects come in
as columns; the raw per-seed points drawn next to them are data, not statistics.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state; rendered by the Agg canvas
whatever the session's backend), styled with seaborn. ``png_bytes(fig)`` renders one.
"""
from __future__ import annotations

import io
import math
from contextlib import contextmanager
from typing import Sequence

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless by default; never switch an interactive session's backend
    matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

VERDICT_COLORS = {"better": "#2a9d8f", "equivalent": "#457b9d", "worse": "#e76f51",
                  "insufficient evidence": "#8d8d8d"}
DPI = 100


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.2), sharey: bool = False):
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _palette(levels: Sequence) -> dict:
    colors = sns.color_palette("colorblind", max(3, len(levels)))
    return {lv: colors[i % len(colors)] for i, lv in enumerate(levels)}


def _facets(df: pd.DataFrame, facet: str | None) -> list[tuple[str, pd.DataFrame]]:
    if facet is None or facet not in df:
        return [("", df)]
    return [(str(k), g) for k, g in df.groupby(facet, sort=True)]


def empty(message: str, size: tuple[float, float] = (6, 1.2)) -> Figure:
    """A placeholder figure carrying a message (when there is nothing to draw)."""
    fig = Figure(figsize=size)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


# ---------------------------------------------------------------- method comparison
def accuracy_by_method(cells: pd.DataFrame, raw: pd.DataFrame | None = None, *, x: str = "method",
                       facet: str | None = "task", value: str = "test_acc", scale: float = 100.0,
                       ylabel: str = "test accuracy (%)", control: str | None = None) -> Figure:
    """Mean and CI per method (columns mean, ci_low, ci_high from ``stats.cell_table``), one panel per
    task, with the per-seed values (``raw[value]``) as dots. Failed runs are written under the axis."""
    facets = _facets(cells, facet)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            order = list(g[x].astype(str))
            pos = {m: i for i, m in enumerate(order)}
            if raw is not None and len(raw):
                r = raw if facet is None or facet not in raw else raw[raw[facet].astype(str) == name]
                if len(r):
                    sns.stripplot(data=r.assign(**{x: r[x].astype(str), "_v": r[value] * scale}), x=x, y="_v",
                                  order=order, ax=ax, color="0.55", size=4, jitter=0.12, alpha=0.8)
            xs = np.array([pos[m] for m in order], float)
            mean, lo, hi = (g[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            err = np.vstack([mean - lo, hi - mean])
            colors = ["#d62828" if control and m == control else "#1d3557" for m in order]
            for i in range(len(xs)):
                ax.errorbar(xs[i] + 0.22, mean[i], yerr=np.nan_to_num(err[:, i:i + 1]), fmt="o", color=colors[i],
                            capsize=4, ms=6)
            labels = [f"{m}\n(n={int(n)}{', ' + str(int(f)) + ' failed' if f else ''})"
                      for m, n, f in zip(order, g["n"], g.get("failures", pd.Series(0, index=g.index)))]
            ax.set_xticks(xs, labels, fontsize=8)
            ax.set_xlabel("")
            ax.set_ylabel(ylabel)
            ax.set_title(name, fontsize=9)
    return fig


def paired_differences(comp: pd.DataFrame, *, scale: float = 100.0, label: str = "task",
                       xlabel: str = "difference vs reference (pp)") -> Figure:
    """Forest plot of the paired differences (delta with its bootstrap CI, ``stats.compare``), the ROPE
    of each comparison shaded, colour = verdict."""
    n = len(comp)
    with _style():
        fig = Figure(figsize=(7.5, max(2.2, 1.2 + 0.45 * n)), layout="constrained")
        ax = fig.subplots()
        ys = np.arange(n)[::-1]
        for y, r in zip(ys, comp.to_dict("records")):
            rope = r["rope"] * scale
            ax.fill_betweenx([y - 0.35, y + 0.35], -rope, rope, color="#a8dadc", alpha=0.5, lw=0)
            c = VERDICT_COLORS.get(r["verdict"], "k")
            d, lo, hi = (r[k] * scale for k in ("delta", "ci_low", "ci_high"))
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=c, lw=2.2)
            ax.plot([d], [y], "o", color=c, ms=7)
        ax.axvline(0, color="k", lw=0.8)
        names = [f"{r['method']} vs {r['reference']}" + (f"  [{r[label]}]" if label in r and r[label] else "")
                 + f"  (n={r['n_pairs']})" for r in comp.to_dict("records")]
        ax.set_yticks(ys, names, fontsize=8)
        ax.set_xlabel(xlabel)
        handles = [Line2D([], [], color=c, marker="o", lw=2, label=v)
                   for v, c in VERDICT_COLORS.items() if v in set(comp["verdict"])]
        handles.append(Patch(color="#a8dadc", alpha=0.5, label="ROPE"))
        ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def rank_plot(ranks: dict[str, float], cd: float | None = None, *, title: str = "") -> Figure:
    """Average ranks (1 = best) with the Nemenyi critical difference drawn as a bar."""
    items = sorted(ranks.items(), key=lambda kv: kv[1])
    with _style():
        fig = Figure(figsize=(6.5, 0.8 + 0.35 * len(items)), layout="constrained")
        ax = fig.subplots()
        ys = np.arange(len(items))[::-1]
        ax.plot([v for _, v in items], ys, "o", color="#1d3557")
        ax.set_yticks(ys, [k for k, _ in items])
        ax.set_xlabel("average rank (1 = best)")
        if cd is not None and np.isfinite(cd):
            x0 = items[0][1]
            ax.plot([x0, x0 + cd], [ys[0] + 0.5] * 2, color="#d62828", lw=3)
            ax.text(x0 + cd / 2, ys[0] + 0.6, f"Nemenyi CD = {cd:.2f}", ha="center", fontsize=8)
            ax.set_ylim(-0.5, len(items) + 0.2)
        ax.set_title(title, fontsize=9)
    return fig


def aggregate_plot(agg: pd.DataFrame, *, control: str | None = None) -> Figure:
    """IQM (and mean) of the normalised score per method with stratified-bootstrap CIs."""
    with _style():
        fig, axes = _grid(2, 2, size=(4.2, 0.9 + 0.4 * max(len(agg), 1)))
        for ax, (col, title) in zip(axes, (("iqm", "IQM of normalised score"), ("mean", "mean of normalised score"))):
            ys = np.arange(len(agg))[::-1]
            v, lo, hi = (agg[c].to_numpy(float) for c in (col, f"{col}_ci_low", f"{col}_ci_high"))
            ax.errorbar(v, ys, xerr=np.nan_to_num(np.vstack([v - lo, hi - v])), fmt="o", color="#1d3557", capsize=4)
            ax.axvline(1.0, color="#d62828", lw=0.8, ls="--")
            ax.set_yticks(ys, list(agg["method"]))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(f"1 = {control or 'control'} mean, 0 = chance")
    return fig


# ---------------------------------------------------------------- ablations
def interaction_plot(means: pd.DataFrame, x: str, hue: str | None, *, scale: float = 100.0,
                     ylabel: str = "test accuracy (%)", title: str = "") -> Figure:
    """Marginal means (``stats.marginal_means``) of ``x`` × ``hue`` with CIs: non-parallel lines are an
    interaction. ``hue`` None: one line (a main-effect plot)."""
    levels_x = list(dict.fromkeys(means[x]))
    pos = {lv: i for i, lv in enumerate(levels_x)}
    hues = list(dict.fromkeys(means[hue])) if hue else [None]
    pal = _palette(hues)
    with _style():
        fig = Figure(figsize=(5.0, 3.4), layout="constrained")
        ax = fig.subplots()
        for j, h in enumerate(hues):
            g = means[means[hue] == h] if hue else means
            xs = np.array([pos[v] for v in g[x]], float) + (j - (len(hues) - 1) / 2) * 0.05
            m, lo, hi = (g[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            ax.errorbar(xs, m, yerr=np.nan_to_num(np.vstack([m - lo, hi - m])), fmt="-o", color=pal[h],
                        capsize=3, label=f"{hue}={h}" if hue else "mean")
        ax.set_xticks(range(len(levels_x)), [str(v) for v in levels_x])
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        if hue:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
    return fig


def effects_plot(effects: pd.DataFrame, *, scale: float = 100.0, xlabel: str = "effect on test accuracy (pp)",
                 title: str = "") -> Figure:
    """Main effects and interactions (``stats.ablation_effects``): the stratified-bootstrap estimate with
    its CI (dark) and the OLS estimate with its t interval (light, offset)."""
    n = len(effects)
    with _style():
        fig = Figure(figsize=(7.0, max(2.2, 1.2 + 0.45 * n)), layout="constrained")
        ax = fig.subplots()
        ys = np.arange(n)[::-1]
        ax.set_ylim(-0.7, n - 0.3)
        for col, lo, hi, color, off, lab in (("estimate", "ci_low", "ci_high", "#1d3557", 0.0, "stratified bootstrap"),
                                             ("estimate_ols", "ci_low_ols", "ci_high_ols", "#e9c46a", -0.2, "OLS")):
            if col not in effects:
                continue
            v, l, h = (effects[c].to_numpy(float) * scale for c in (col, lo, hi))
            ax.errorbar(v, ys + off, xerr=np.nan_to_num(np.vstack([v - l, h - v])), fmt="o", color=color, capsize=3,
                        label=lab)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(ys, [f"{r['axis']}: {r['level']} vs {r['reference']}" for r in effects.to_dict("records")],
                      fontsize=8)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
        ax.set_title(title, fontsize=9, loc="left")
    return fig


# ---------------------------------------------------------------- curves
def _label_curve_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, integer x ticks (epochs, trials), title and legend of a curve panel."""
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def learning_curves(bands: pd.DataFrame, *, hue: str = "method", facet: str | None = "task", scale: float = 100.0,
                    ylabel: str = "accuracy (%)", style: str | None = None,
                    style_order: Sequence | None = None) -> Figure:
    """Mean curves over seeds with their t bands (``stats.curve_bands``), one panel per facet; ``style``:
    a column drawn as line styles (solid, dashed, dotted, ... in ``style_order``)."""
    facets = _facets(bands, facet)
    hues = list(dict.fromkeys(bands[hue])) if hue in bands else [None]
    pal = _palette(hues)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for h in hues:
                s = g if h is None else g[g[hue] == h]
                if style and style in s:
                    order = list(style_order or sorted(s[style].unique()))
                    parts = [(v, s[s[style] == v]) for v in order if (s[style] == v).any()]
                else:
                    parts = [(None, s)]
                for i, (st, p) in enumerate(parts):
                    p = p.sort_values("epoch")
                    ls = ["-", "--", ":", "-."][i % 4]
                    label = f"{h}" + (f" {st}" if st is not None else "")
                    ax.plot(p["epoch"], p["mean"] * scale, ls, color=pal[h], marker="o", ms=3, label=label)
                    ax.fill_between(p["epoch"], p["ci_low"].to_numpy(float) * scale,
                                    p["ci_high"].to_numpy(float) * scale, color=pal[h], alpha=0.15, lw=0)
            _label_curve_axes(ax, "epoch", ylabel, name)
    return fig


def budget_plot(budget: pd.DataFrame, *, hue: str = "method", facet: str | None = "task", scale: float = 100.0,
                ylabel: str = "best validation accuracy (%)") -> Figure:
    """Tuning budget curves (``stats.budget_curves``): expected best after k trials (line) and the best
    so far in trial order (steps)."""
    facets = _facets(budget, facet)
    hues = list(dict.fromkeys(budget[hue]))
    pal = _palette(hues)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for h in hues:
                s = g[g[hue] == h].sort_values("k")
                ax.plot(s["k"], s["expected_max"] * scale, "-o", ms=3, color=pal[h], label=f"{h} expected max")
                ax.step(s["k"], s["best_so_far"] * scale, where="post", ls="--", color=pal[h], alpha=0.6,
                        label=f"{h} best so far")
            _label_curve_axes(ax, "trials k", ylabel, name)
    return fig


def compute_plot(tables: dict[str, pd.DataFrame], *, x: str = "method", facet: str | None = "task") -> Figure:
    """One panel per compute quantity (``{label: stats.cell_table(...)}``): mean with CI per method
    (and task, when there are several), as horizontal bars."""
    panels = [(lab, t) for lab, t in tables.items() if len(t) and np.isfinite(t["mean"].to_numpy(float)).any()]
    if not panels:
        return empty("no compute measurements")
    n = max(len(t) for _, t in panels)
    methods = list(dict.fromkeys(m for _, t in panels for m in t[x].astype(str)))
    pal = _palette(methods)
    with _style():
        fig, axes = _grid(len(panels), 2, size=(5.2, max(2.0, 0.9 + 0.32 * n)))
        for ax, (lab, t) in zip(axes, panels):
            t = t.reset_index(drop=True)
            several = facet in t and t[facet].nunique() > 1
            names = [f"{m}  [{k}]" if several else str(m) for m, k in
                     zip(t[x].astype(str), t[facet].astype(str) if facet in t else [""] * len(t))]
            ys = np.arange(len(t))[::-1]
            m, lo, hi = (t[c].to_numpy(float) for c in ("mean", "ci_low", "ci_high"))
            ax.barh(ys, m, color=[pal[v] for v in t[x].astype(str)], alpha=0.85)
            ax.errorbar(m, ys, xerr=np.nan_to_num(np.clip(np.vstack([m - lo, hi - m]), 0, None)), fmt="none",
                        color="k", capsize=3)
            ax.set_yticks(ys, names, fontsize=7)
            ax.set_title(lab, fontsize=9)
    return fig


# ---------------------------------------------------------------- per layer
def layer_curves(bands: pd.DataFrame, *, facet: str = "group", scale: float = 100.0,
                 ylabel: str = "accuracy (%)") -> Figure:
    """Per-unit accuracy over epochs (unit 0 = the model's own rule, drawn black), one panel per group."""
    facets = _facets(bands, facet)
    units = sorted(u for u in bands["unit"].unique() if u != 0)
    pal = dict(zip(units, sns.color_palette("viridis", max(len(units), 1))))
    pal[0] = (0, 0, 0)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for u in [0] + units:
                s = g[g["unit"] == u].sort_values("epoch")
                if not len(s):
                    continue
                ax.plot(s["epoch"], s["mean"] * scale, "-o", ms=3, color=pal[u], lw=2.2 if u == 0 else 1.5,
                        label="model" if u == 0 else f"unit {u}")
                ax.fill_between(s["epoch"], s["ci_low"].to_numpy(float) * scale, s["ci_high"].to_numpy(float) * scale,
                                color=pal[u], alpha=0.12, lw=0)
            _label_curve_axes(ax, "epoch", ylabel, name)
    return fig


def by_depth(summary: pd.DataFrame, *, y: str = "mean", low: str = "ci_low", high: str = "ci_high",
             hue: str = "group", ylabel: str = "", title: str = "", hline: float | None = None) -> Figure:
    """A statistic per unit depth with its CI, one line per ``hue`` (delays, correlations)."""
    hues = list(dict.fromkeys(summary[hue])) if hue in summary else [None]
    pal = _palette(hues)
    with _style():
        fig = Figure(figsize=(5.4, 3.4), layout="constrained")
        ax = fig.subplots()
        for j, h in enumerate(hues):
            s = (summary if h is None else summary[summary[hue] == h]).sort_values("unit")
            xs = s["unit"].to_numpy(float) + (j - (len(hues) - 1) / 2) * 0.06
            m, lo, hi = (s[c].to_numpy(float) for c in (y, low, high))
            ax.errorbar(xs, m, yerr=np.nan_to_num(np.clip(np.vstack([m - lo, hi - m]), 0, None)), fmt="-o",
                        color=pal[h], capsize=3, label=str(h))
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.8)
        units = sorted(summary["unit"].unique())
        ax.set_xticks(units, [("model" if u == 0 else f"unit {u}") for u in units])
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return fig

