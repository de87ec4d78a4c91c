"""Figures: one function per figure type, each taking what ``ffbench.stats`` returned (tidy DataFrames)
and returning a matplotlib ``Figure``. Nothing is estimated here: means, intervals and effects come in
as columns; the raw per-seed points drawn next to them are data, not statistics.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state; rendered by the Agg canvas
whatever the session's backend) at ``DPI``, styled with seaborn; ``document`` renders them to PNG.

House rules, kept here so every report (and every kind a plugin adds) follows them: figures are
``WIDTH`` inches wide (at least 900 px at ``DPI``); each method has one colour everywhere
(``method_color``); intervals and bands are clipped to the metric's range (accuracy: 0-100%); legends
sit outside the plotting area; panels of one figure share their value axis unless a caption says not.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless by default; never switch an interactive session's backend
    matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ffbench.analysis.document import natural_key  # noqa: E402

VERDICT_COLORS = {"better": "#2a9d8f", "equivalent": "#457b9d", "worse": "#e76f51", "insufficient evidence": "#8d8d8d"}
DPI = 100
WIDTH = 10.0  # inches: 1000 px at DPI, so text stays legible when the page shows the figure at full width
PANEL_HEIGHT = 3.4
ACCURACY = (0.0, 1.0)  # the range of an accuracy (before scaling to %)
LINESTYLES = ("-", "--", ":", "-.")
CROWDED = 4  # more columns than this in a panel of a three-panel row: their labels are slanted

# ---------------------------------------------------------------- one colour per method
# The built-in methods keep a fixed colour (colour-blind-safe); any other name gets a colour from its hash,
# so a method looks the same in every figure, every report and every suite.
_CB = sns.color_palette("colorblind", 10)
BUILTIN_COLORS = {
    "bp": _CB[0],
    "bp.deepsup": _CB[1],
    "cwc": _CB[2],
    "ff.hinton": _CB[3],
    "sff": _CB[4],
    "asge": _CB[5],
    "cwc.nocfse": _CB[6],
    "sff.layer": _CB[9],
    # the zoo: hues apart from the palette above and from each other (a variant near its method)
    "symba": "#8b0000",
    "trifecta": "#4b0082",
    "trifecta.local": "#9370db",
    "deeperforward": "#1b1b1b",
    "cafo": "#6b8e23",
    "cafo.ce": "#556b2f",
    "cafo.mse": "#9acd32",
    "cafo.sl": "#bdb76b",
    "monoforward": "#17becf",
    "scff": "#b8860b",
    "pepita": "#7b3294",
}
_HASHED = sns.color_palette("husl", 24)


def method_color(name: str) -> tuple[float, float, float]:
    """The colour of a method, the same in every figure. A treatment ``method[axis=level]`` takes its
    method's colour."""
    base = str(name).split("[", 1)[0].strip()
    if base in BUILTIN_COLORS:
        return tuple(float(c) for c in mcolors.to_rgb(BUILTIN_COLORS[base]))
    h = int(hashlib.sha1(base.encode()).hexdigest(), 16)  # stable across processes (unlike hash())
    return tuple(_HASHED[h % len(_HASHED)])


def method_palette(names: Iterable) -> dict:
    return {n: method_color(n) for n in names}


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.95):
        yield


def _figure(height: float) -> Figure:
    return Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")


def _grid(n: int, ncols: int = 3, height: float = PANEL_HEIGHT, sharey: bool = True, sharex: bool = False):
    """``n`` panels on a figure ``WIDTH`` wide; their value axes shared by default (comparable at a glance)."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = _figure(height * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    if sharey:  # shared axes hide inner tick labels; every row keeps its own on the left
        for ax in axes[:n]:
            ax.tick_params(labelleft=True)
    return fig, axes[:n]


def _palette(levels: Sequence) -> dict:
    """Colours for levels that are not methods (axis levels, groups)."""
    colors = sns.color_palette("colorblind", max(3, len(levels)))
    return {lv: colors[i % len(colors)] for i, lv in enumerate(levels)}


def _facets(df: pd.DataFrame, facet: str | None) -> list[tuple[str, pd.DataFrame]]:
    if facet is None or facet not in df:
        return [("", df)]
    return sorted(((str(k), g) for k, g in df.groupby(facet, sort=False)), key=lambda kg: natural_key(kg[0]))


def _clip(values, limits: tuple[float, float] | None) -> np.ndarray:
    v = np.asarray(values, float)
    return v if limits is None else np.clip(v, limits[0], limits[1])


def _band(ax, x, low, high, color, limits: tuple[float, float] | None, alpha: float = 0.15) -> None:
    """An interval band, clipped to the metric's range (a t band can overshoot 100%)."""
    ax.fill_between(np.asarray(x, float), _clip(low, limits), _clip(high, limits), color=color, alpha=alpha, lw=0)


def _yerr(mean, low, high, limits: tuple[float, float] | None) -> np.ndarray:
    """Error-bar lengths from an interval clipped to ``limits``; never negative, NaN as 0."""
    m = np.asarray(mean, float)
    return np.nan_to_num(np.clip(np.vstack([m - _clip(low, limits), _clip(high, limits) - m]), 0, None))


def _clamp_ylim(ax, limits: tuple[float, float] | None) -> None:
    """Keep the value axis inside the metric's range (plus a hair, so markers at 100% are not cut)."""
    if limits is None:
        return
    lo, hi = ax.get_ylim()
    pad = 0.01 * (limits[1] - limits[0])
    ax.set_ylim(max(lo, limits[0] - pad), min(hi, limits[1] + pad))


def _legend_outside(fig: Figure, axes, handles=None, title: str | None = None) -> None:
    """One legend for the whole figure, right of the panels, never on the data; duplicates merged."""
    if handles is None:
        seen: dict[str, object] = {}
        for ax in np.atleast_1d(axes):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        handles = [_as_handle(h, lab) for lab, h in seen.items()]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, title=title, title_fontsize=8)


def _as_handle(h, label: str):
    h.set_label(label)
    return h


def empty(message: str, size: tuple[float, float] = (WIDTH, 1.2)) -> Figure:
    """A placeholder figure carrying a message (when there is nothing to draw)."""
    fig = Figure(figsize=size, dpi=DPI)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


# ---------------------------------------------------------------- method comparison
def accuracy_by_method(
    cells: pd.DataFrame,
    raw: pd.DataFrame | None = None,
    *,
    x: str = "method",
    facet: str | None = "task",
    value: str = "test_acc",
    scale: float = 100.0,
    ylabel: str = "test accuracy (%)",
    control: str | None = None,
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Mean and CI per method (columns mean, ci_low, ci_high from ``stats.cell_table``), one panel per
    task on a shared accuracy axis, with the per-seed values (``raw[value]``) as dots. The control is
    named under its column; failed runs are written there too."""
    facets = _facets(cells, facet)
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            order = list(g[x].astype(str))
            pos = {m: i for i, m in enumerate(order)}
            if raw is not None and len(raw):
                r = raw if facet is None or facet not in raw else raw[raw[facet].astype(str) == name]
                if len(r):
                    sns.stripplot(
                        data=r.assign(**{x: r[x].astype(str), "_v": r[value] * scale}),
                        x=x,
                        y="_v",
                        order=order,
                        ax=ax,
                        color="0.6",
                        size=4,
                        jitter=0.12,
                        alpha=0.8,
                    )
            xs = np.array([pos[m] for m in order], float)
            mean, lo, hi = (g[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            err = _yerr(mean, lo, hi, lim)
            for i, m in enumerate(order):
                ax.errorbar(
                    xs[i] + 0.22, mean[i], yerr=err[:, i : i + 1], fmt="o", color=method_color(m), capsize=4, ms=7, lw=2
                )
            crowded = len(order) > CROWDED  # names side by side would overlap: one slanted line each
            sep = " " if crowded else "\n"
            labels = [
                f"{m}{' (control)' if control and m == control else ''}{sep}"
                f"(n={int(n)}{', ' + str(int(f)) + ' failed' if f else ''})"
                for m, n, f in zip(order, g["n"], g.get("failures", pd.Series(0, index=g.index)))
            ]
            if crowded:
                ax.set_xticks(xs, labels, fontsize=8, rotation=45, ha="right", rotation_mode="anchor")
            else:
                ax.set_xticks(xs, labels, fontsize=8)
            ax.set_xlabel("")
            ax.set_ylabel(ylabel)
            ax.set_title(name, fontsize=9)
        for ax in axes:
            _clamp_ylim(ax, lim)
    return fig


def paired_differences(
    comp: pd.DataFrame, *, scale: float = 100.0, label: str = "task", xlabel: str = "difference vs reference (pp)"
) -> Figure:
    """Forest plot of the paired differences (delta with its CI, ``stats.compare``), the ROPE of each
    comparison shaded, colour = verdict; the legend sits right of the plot."""
    n = len(comp)
    with _style():
        fig = _figure(max(2.2, 1.2 + 0.45 * n))
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
        names = [
            f"{r['method']} vs {r['reference']}"
            + (f"  [{r[label]}]" if label in r and r[label] else "")
            + f"  (n={r['n_pairs']})"
            for r in comp.to_dict("records")
        ]
        ax.set_yticks(ys, names, fontsize=8)
        ax.set_xlabel(xlabel)
        handles = [
            Line2D([], [], color=c, marker="o", lw=2, label=v)
            for v, c in VERDICT_COLORS.items()
            if v in set(comp["verdict"])
        ]
        handles.append(Patch(color="#a8dadc", alpha=0.5, label="ROPE"))
        _legend_outside(fig, ax, handles, title="verdict")
    return fig


def rank_plot(ranks: dict[str, float], cd: float | None = None, *, title: str = "") -> Figure:
    """Average ranks (1 = best) with the Nemenyi critical difference drawn as a bar."""
    items = sorted(ranks.items(), key=lambda kv: kv[1])
    with _style():
        fig = _figure(1.0 + 0.35 * len(items))
        ax = fig.subplots()
        ys = np.arange(len(items))[::-1]
        ax.scatter([v for _, v in items], ys, c=[method_color(k) for k, _ in items], s=50, zorder=3)
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
    """Per treatment (``stats.aggregate``): the IQM, mean and optimality gap of the normalised score and
    the probability of improvement over the control, each with its stratified-bootstrap CI. The panels
    share the treatment axis; each measures its own quantity on its own scale."""
    panels = [
        ("iqm", "IQM of normalised score", 1.0),
        ("mean", "mean of normalised score", 1.0),
        ("optimality_gap", "optimality gap (below 1)", 0.0),
        ("prob_improvement", f"P(improvement over {control or 'control'})", 0.5),
    ]
    panels = [p for p in panels if p[0] in agg]
    with _style():
        fig, axes = _grid(len(panels), 2, height=0.9 + 0.4 * max(len(agg), 1))
        for ax, (col, title, ref) in zip(axes, panels):
            ys = np.arange(len(agg))[::-1]
            v, lo, hi = (agg[c].to_numpy(float) for c in (col, f"{col}_ci_low", f"{col}_ci_high"))
            lim = (0.0, 1.0) if col == "prob_improvement" else None
            err = _yerr(v, lo, hi, lim)
            for y, m, vi, e in zip(ys, agg["method"], v, err.T):
                ax.errorbar(vi, y, xerr=e.reshape(2, 1), fmt="o", color=method_color(m), capsize=4, ms=7)
            ax.axvline(ref, color="#d62828", lw=0.8, ls="--")
            ax.set_yticks(ys, list(agg["method"]))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(
                "probability" if col == "prob_improvement" else f"1 = {control or 'control'} mean, 0 = chance"
            )
    return fig


def performance_profiles(profiles: pd.DataFrame, *, control: str | None = None) -> Figure:
    """rliable's score distributions (``stats.aggregate_profiles``): the fraction of runs whose
    normalised score exceeds τ, per treatment, with its stratified-bootstrap band (clipped to [0, 1])."""
    if not len(profiles):
        return empty("no normalised scores")
    methods = list(dict.fromkeys(profiles["method"]))
    with _style():
        fig = _figure(4.0)
        ax = fig.subplots()
        seen: dict[str, int] = {}
        for m in methods:
            p = profiles[profiles["method"] == m].sort_values("tau")
            c = method_color(m)
            base = str(m).split("[", 1)[0]
            i = seen[base] = seen.get(base, -1) + 1  # treatments of one method: its colour, their own dashes
            ax.plot(
                p["tau"],
                p["fraction"],
                LINESTYLES[i % 4],
                color=c,
                lw=2.4 if m == control else 1.6,
                label=f"{m} (control)" if m == control else str(m),
            )
            _band(ax, p["tau"], p["ci_low"], p["ci_high"], c, (0.0, 1.0))
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"normalised score τ (1 = {control or 'control'} mean, 0 = chance)")
        ax.set_ylabel("fraction of runs with score > τ")
        _clamp_ylim(ax, (0.0, 1.0))
        _legend_outside(fig, ax)
    return fig


# ---------------------------------------------------------------- ablations
def interaction_plot(
    means: pd.DataFrame,
    x: str,
    hue: str | None,
    *,
    scale: float = 100.0,
    ylabel: str = "test accuracy (%)",
    title: str = "",
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Marginal means (``stats.marginal_means``) of ``x`` × ``hue`` with CIs: non-parallel lines are an
    interaction. ``hue`` None: one line (a main-effect plot)."""
    levels_x = list(dict.fromkeys(means[x]))
    pos = {lv: i for i, lv in enumerate(levels_x)}
    hues = list(dict.fromkeys(means[hue])) if hue else [None]
    pal = _palette(hues)
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    with _style():
        fig = _figure(3.8)
        ax = fig.subplots()
        for j, h in enumerate(hues):
            g = means[means[hue] == h] if hue else means
            xs = np.array([pos[v] for v in g[x]], float) + (j - (len(hues) - 1) / 2) * 0.05
            m, lo, hi = (g[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            ax.errorbar(
                xs,
                m,
                yerr=_yerr(m, lo, hi, lim),
                fmt="-o",
                color=pal[h],
                capsize=3,
                label=f"{hue}={h}" if hue else "mean",
            )
        ax.set_xticks(range(len(levels_x)), [str(v) for v in levels_x])
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        _clamp_ylim(ax, lim)
        if hue:
            _legend_outside(fig, ax)
        ax.set_title(title, fontsize=9)
    return fig


def effects_plot(
    effects: pd.DataFrame, *, scale: float = 100.0, xlabel: str = "effect on test accuracy (pp)", title: str = ""
) -> Figure:
    """Main effects and interactions (``stats.ablation_effects``): the stratified-bootstrap estimate with
    its CI (dark) and the OLS estimate with its t interval (light, offset)."""
    n = len(effects)
    with _style():
        fig = _figure(max(2.2, 1.2 + 0.45 * n))
        ax = fig.subplots()
        ys = np.arange(n)[::-1]
        ax.set_ylim(-0.7, n - 0.3)
        for col, lo, hi, color, off, lab in (
            ("estimate_boot", "ci_low_boot", "ci_high_boot", "#1d3557", 0.0, "stratified bootstrap"),
            ("estimate_ols", "ci_low_ols", "ci_high_ols", "#e9c46a", -0.2, "OLS"),
        ):
            if col not in effects:
                continue
            v, low, high = (effects[c].to_numpy(float) * scale for c in (col, lo, hi))
            ax.errorbar(
                v,
                ys + off,
                xerr=np.nan_to_num(np.vstack([v - low, high - v])),
                fmt="o",
                color=color,
                capsize=3,
                label=lab,
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            ys, [f"{r['axis']}: {r['level']} vs {r['reference']}" for r in effects.to_dict("records")], fontsize=8
        )
        ax.set_xlabel(xlabel)
        _legend_outside(fig, ax)
        ax.set_title(title, fontsize=9, loc="left")
    return fig


# ---------------------------------------------------------------- curves
def _label_curve_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, integer x ticks (epochs, trials) and title of a curve panel (the legend is the figure's)."""
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def learning_curves(
    bands: pd.DataFrame,
    *,
    hue: str = "method",
    facet: str | None = "task",
    scale: float = 100.0,
    ylabel: str = "accuracy (%)",
    style: str | None = None,
    style_order: Sequence | None = None,
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Mean curves over seeds with their t bands (``stats.curve_bands``; bands clipped to ``limits``), one
    panel per facet on a shared accuracy axis; ``style``: a column drawn as line styles (solid, dashed,
    dotted, ... in ``style_order``). Colour = method (``method_color``)."""
    facets = _facets(bands, facet)
    hues = list(dict.fromkeys(bands[hue])) if hue in bands else [None]
    pal = method_palette(hues) if hue == "method" else _palette(hues)
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    styles = list(style_order or sorted(bands[style].unique())) if style and style in bands else [None]
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for h in hues:
                s = g if h is None else g[g[hue] == h]
                for i, st in enumerate(styles):
                    p = (s if st is None else s[s[style] == st]).sort_values("epoch")
                    if not len(p):
                        continue
                    ax.plot(p["epoch"], p["mean"] * scale, LINESTYLES[i % 4], color=pal[h], marker="o", ms=3)
                    _band(
                        ax,
                        p["epoch"],
                        p["ci_low"].to_numpy(float) * scale,
                        p["ci_high"].to_numpy(float) * scale,
                        pal[h],
                        lim,
                    )
            _label_curve_axes(ax, "epoch", ylabel, name)
        for ax in axes:
            _clamp_ylim(ax, lim)
        handles = [Line2D([], [], color=pal[h], lw=2, label=str(h)) for h in hues if h is not None]
        if len(styles) > 1:
            handles += [Line2D([], [], color="0.3", ls=LINESTYLES[i % 4], label=str(st)) for i, st in enumerate(styles)]
        _legend_outside(fig, axes, handles)
    return fig


def budget_plot(
    budget: pd.DataFrame,
    *,
    hue: str = "method",
    facet: str | None = "task",
    scale: float = 100.0,
    ylabel: str = "best validation accuracy (%)",
) -> Figure:
    """Tuning budget curves (``stats.budget_curves``): expected best after k trials (line) and the best
    so far in trial order (steps), panels on a shared accuracy axis."""
    facets = _facets(budget, facet)
    hues = list(dict.fromkeys(budget[hue]))
    pal = method_palette(hues) if hue == "method" else _palette(hues)
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for h in hues:
                s = g[g[hue] == h].sort_values("k")
                ax.plot(s["k"], s["expected_max"] * scale, "-o", ms=3, color=pal[h])
                ax.step(s["k"], s["best_so_far"] * scale, where="post", ls="--", color=pal[h], alpha=0.6)
            _label_curve_axes(ax, "trials k", ylabel, name)
            _clamp_ylim(ax, (0.0, scale))
        handles = [Line2D([], [], color=pal[h], lw=2, label=str(h)) for h in hues]
        handles += [
            Line2D([], [], color="0.3", ls="-", marker="o", ms=3, label="expected max"),
            Line2D([], [], color="0.3", ls="--", label="best so far"),
        ]
        _legend_outside(fig, axes, handles)
    return fig


def compute_plot(tables: dict[str, pd.DataFrame], *, x: str = "method", facet: str | None = "task") -> Figure:
    """One panel per compute quantity (``{label: stats.cell_table(...)}``): mean with CI per method
    (and task, when there are several), as horizontal bars. Each panel is a different quantity in its own
    unit, so the value axes are not shared."""
    panels = [(lab, t) for lab, t in tables.items() if len(t) and np.isfinite(t["mean"].to_numpy(float)).any()]
    if not panels:
        return empty("no compute measurements")
    n = max(len(t) for _, t in panels)
    with _style():
        fig, axes = _grid(len(panels), 2, height=max(2.0, 0.9 + 0.32 * n), sharey=False)
        for ax, (lab, t) in zip(axes, panels):
            t = t.reset_index(drop=True)
            several = facet in t and t[facet].nunique() > 1
            names = [
                f"{m}  [{k}]" if several else str(m)
                for m, k in zip(t[x].astype(str), t[facet].astype(str) if facet in t else [""] * len(t))
            ]
            ys = np.arange(len(t))[::-1]
            m, lo, hi = (t[c].to_numpy(float) for c in ("mean", "ci_low", "ci_high"))
            ax.barh(ys, m, color=[method_color(v) for v in t[x].astype(str)], alpha=0.85)
            ax.errorbar(m, ys, xerr=_yerr(m, lo, hi, (0.0, np.inf)), fmt="none", color="k", capsize=3)
            ax.set_yticks(ys, names, fontsize=7)
            ax.set_title(lab, fontsize=9)
    return fig


# ---------------------------------------------------------------- per layer
def layer_curves(
    bands: pd.DataFrame,
    *,
    facet: str = "group",
    scale: float = 100.0,
    ylabel: str = "accuracy (%)",
    output_units: Mapping[str, Iterable[int]] | None = None,
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Per-unit accuracy over epochs (unit 0 = the model's own rule, drawn black), one panel per group on a
    shared accuracy axis, bands clipped to ``limits``. ``output_units``: per group, the units that are the
    model's own output (drawn dashed over the model's line, which they equal)."""
    facets = _facets(bands, facet)
    units = sorted(u for u in bands["unit"].unique() if u != 0)
    pal = dict(zip(units, sns.color_palette("viridis", max(len(units), 1))))
    pal[0] = (0, 0, 0)
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    outputs = {str(k): set(v) for k, v in (output_units or {}).items()}
    with _style():
        fig, axes = _grid(len(facets))
        for ax, (name, g) in zip(axes, facets):
            for u in [0] + units:
                s = g[g["unit"] == u].sort_values("epoch")
                if not len(s):
                    continue
                is_out = u in outputs.get(name, ())
                ax.plot(
                    s["epoch"],
                    s["mean"] * scale,
                    "--" if is_out else "-",
                    marker="o",
                    ms=3,
                    color=pal[u],
                    lw=2.4 if u == 0 else 1.6,
                )
                _band(
                    ax,
                    s["epoch"],
                    s["ci_low"].to_numpy(float) * scale,
                    s["ci_high"].to_numpy(float) * scale,
                    pal[u],
                    lim,
                    alpha=0.12,
                )
            _label_curve_axes(ax, "epoch", ylabel, name)
        for ax in axes:
            _clamp_ylim(ax, lim)
        handles = [Line2D([], [], color=pal[u], lw=2, label="model" if u == 0 else f"unit {u}") for u in [0] + units]
        if any(outputs.values()):
            handles.append(Line2D([], [], color="0.3", ls="--", label="unit = model output"))
        _legend_outside(fig, axes, handles)
    return fig


def by_depth(
    summary: pd.DataFrame,
    *,
    y: str = "mean",
    low: str = "ci_low",
    high: str = "ci_high",
    hue: str = "group",
    ylabel: str = "",
    title: str = "",
    hline: float | None = None,
    limits: tuple[float, float] | None = None,
    unit_labels: Mapping[int, str] | None = None,
) -> Figure:
    """A statistic per unit depth with its CI (clipped to ``limits``), one line per ``hue`` (delays,
    correlations, accuracies); ``unit_labels`` names the x ticks (default 'model' for 0, 'unit K')."""
    hues = list(dict.fromkeys(summary[hue])) if hue in summary else [None]
    pal = _palette(hues)
    with _style():
        fig = _figure(3.8)
        ax = fig.subplots()
        for j, h in enumerate(hues):
            s = (summary if h is None else summary[summary[hue] == h]).sort_values("unit")
            xs = s["unit"].to_numpy(float) + (j - (len(hues) - 1) / 2) * 0.06
            m, lo, hi = (s[c].to_numpy(float) for c in (y, low, high))
            ax.errorbar(xs, m, yerr=_yerr(m, lo, hi, limits), fmt="-o", color=pal[h], capsize=3, label=str(h))
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.8)
        units = sorted(summary["unit"].unique())
        names = dict(unit_labels or {})
        ax.set_xticks(units, [names.get(u, "model" if u == 0 else f"unit {u}") for u in units])
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        _clamp_ylim(ax, limits)
        _legend_outside(fig, ax)
    return fig


# ---------------------------------------------------------------- small data and transfer
def size_curves(
    cells: pd.DataFrame,
    *,
    x: str = "x",
    label: str = "size_label",
    hue: str = "method",
    scale: float = 100.0,
    ylabel: str = "test accuracy (%)",
    xlabel: str = "training images (log scale)",
    title: str = "",
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Mean with its interval band (``stats.cell_table`` columns mean, ci_low, ci_high) against the
    training-set size at position ``x`` on a log axis, one line per method in its colour; the ticks are
    the sizes, named by ``label``."""
    hues = list(dict.fromkeys(cells[hue]))
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    with _style():
        fig = _figure(4.0)
        ax = fig.subplots()
        for h in hues:
            s = cells[cells[hue] == h].sort_values(x)
            m, lo, hi = (s[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            ax.plot(s[x], m, "-o", ms=4, color=method_color(h), label=str(h))
            _band(ax, s[x], lo, hi, method_color(h), lim)
        ax.set_xscale("log")
        ticks = cells.drop_duplicates(x).sort_values(x)
        ax.set_xticks(ticks[x].to_numpy(float), [str(v) for v in ticks[label]])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        _clamp_ylim(ax, lim)
        _legend_outside(fig, ax)
    return fig


def points_by_level(
    cells: pd.DataFrame,
    *,
    x: str,
    order: Sequence,
    hue: str = "method",
    scale: float = 100.0,
    ylabel: str = "test accuracy (%)",
    xlabel: str = "",
    title: str = "",
    limits: tuple[float, float] | None = ACCURACY,
) -> Figure:
    """Mean and interval (columns mean, ci_low, ci_high) of each method at each level of ``x`` (in
    ``order``), the methods side by side in their colours, on one accuracy axis."""
    hues = list(dict.fromkeys(cells[hue]))
    pos = {lv: i for i, lv in enumerate(order)}
    width = 0.6 / max(len(hues), 1)
    lim = None if limits is None else (limits[0] * scale, limits[1] * scale)
    with _style():
        fig = _figure(4.0)
        ax = fig.subplots()
        for j, h in enumerate(hues):
            s = cells[(cells[hue] == h) & cells[x].isin(pos)]
            xs = np.array([pos[v] for v in s[x]], float) + (j - (len(hues) - 1) / 2) * width
            m, lo, hi = (s[c].to_numpy(float) * scale for c in ("mean", "ci_low", "ci_high"))
            ax.errorbar(
                xs, m, yerr=_yerr(m, lo, hi, lim), fmt="o", color=method_color(h), capsize=4, ms=7, lw=2, label=str(h)
            )
        ax.set_xticks(range(len(order)), [str(v) for v in order])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        _clamp_ylim(ax, lim)
        _legend_outside(fig, ax)
    return fig
