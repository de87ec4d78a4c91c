"""Factorial ablations: an OLS model of the axes' main effects and two-way interactions (sum-to-zero coding),
effects with intervals and adjusted p-values, marginal means for interaction plots."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ffbench.stats.defaults import CONFIDENCE, N_RESAMPLES, SEED
from ffbench.stats.intervals import make_rng, mean_of_stratum_means, stratified_bootstrap
from ffbench.stats.tables import _key, _sort_key, ok_mask
from ffbench.stats.verdicts import adjust_pvalues


def _sum_coding(levels: list) -> dict[Any, np.ndarray]:
    """Deviation (sum-to-zero) coding: level j < k-1 -> e_j, the last level -> -1 everywhere."""
    k = len(levels)
    code = {lv: np.zeros(k - 1) for lv in levels}
    for j, lv in enumerate(levels[:-1]):
        code[lv][j] = 1.0
    if k > 1:
        code[levels[-1]][:] = -1.0
    return code


class _Design:
    """A hand-built OLS design: intercept, sum-coded main effects of ``axes`` and their two-way
    interactions, plus sum-coded blocks (seed). Built by hand so that contrasts over a grid of levels
    are plain vectors (no formula machinery)."""

    def __init__(self, df: pd.DataFrame, axes: list[str], blocks: list[str]):
        self.axes, self.blocks = axes, blocks
        self.levels = {f: sorted(df[f].unique(), key=_sort_key) for f in axes + blocks}
        self.codes = {f: _sum_coding(self.levels[f]) for f in axes + blocks}
        self.terms: dict[str, slice] = {}
        names, pos = ["Intercept"], 1
        for f in axes + blocks:
            k = len(self.levels[f]) - 1
            self.terms[f] = slice(pos, pos + k)
            names += [f"{f}[{lv}]" for lv in self.levels[f][:-1]]
            pos += k
        self.pairs = list(itertools.combinations(axes, 2))
        for f, g in self.pairs:
            k = (len(self.levels[f]) - 1) * (len(self.levels[g]) - 1)
            self.terms[f"{f}:{g}"] = slice(pos, pos + k)
            names += [f"{f}[{a}]:{g}[{b}]" for a in self.levels[f][:-1] for b in self.levels[g][:-1]]
            pos += k
        self.names = names

    def row(self, levels: Mapping[str, Any], block_average: bool = True) -> np.ndarray:
        parts = [np.ones(1)]
        for f in self.axes + self.blocks:
            if f in self.blocks and block_average:
                parts.append(np.zeros(len(self.levels[f]) - 1))  # sum coding: 0 = the average block
            else:
                parts.append(self.codes[f][levels[f]])
        for f, g in self.pairs:
            parts.append(np.outer(self.codes[f][levels[f]], self.codes[g][levels[g]]).ravel())
        return np.concatenate(parts)

    def matrix(self, df: pd.DataFrame) -> np.ndarray:
        return np.vstack([self.row(r, block_average=False) for r in df[self.axes + self.blocks].to_dict("records")])


def _estimable(c: np.ndarray, X: np.ndarray) -> bool:
    proj = np.linalg.pinv(X) @ X
    return bool(np.allclose(c @ proj, c, atol=1e-8))


def ablation_model(
    frame: pd.DataFrame, metric: str, axes: Sequence[str], *, block: str | None = "seed", confidence: float = CONFIDENCE
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """OLS of ``metric`` on the axes' main effects and two-way interactions (sum-to-zero coding), with
    ``block`` (the seed: common random numbers) as a blocking factor, over the usable rows of one group
    (method, dataset, backbone fixed). Returns the term table (term, df_num, df_denom, F, p, partial η²;
    Wald F-test of all the term's coefficients, the Type III test under sum coding) and model info
    (n, residual df, R², note). Axes with a single level are left out."""
    df = frame[ok_mask(frame, metric)]
    axes = [a for a in axes if df[a].nunique() > 1]
    blocks = [block] if block and block in df and df[block].nunique() > 1 else []
    info: dict[str, Any] = {"n": len(df), "axes": axes, "blocks": blocks, "model": "OLS"}
    if not axes:
        info["note"] = "no axis with more than one level among the usable runs"
        return pd.DataFrame(), info
    import statsmodels.api as sm

    design = _Design(df, axes, blocks)
    X = design.matrix(df)
    y = df[metric].to_numpy(float)
    rank = np.linalg.matrix_rank(X)
    info.update(rank=int(rank), parameters=X.shape[1], df_resid=int(len(y) - rank))
    if len(y) - rank < 1:
        info["note"] = (
            f"no residual degrees of freedom ({len(y)} runs, {rank} parameters): more seeds are needed for the model"
        )
        return pd.DataFrame(), info
    res = sm.OLS(y, X).fit()
    info.update(r2=float(res.rsquared), df_resid=float(res.df_resid), design=design, result=res)
    rows = []
    for term, sl in design.terms.items():
        if term in blocks:
            kind = "block"
        else:
            kind = "interaction" if ":" in term else "main"
        R = np.zeros((sl.stop - sl.start, X.shape[1]))
        R[np.arange(sl.stop - sl.start), np.arange(sl.start, sl.stop)] = 1
        R = R[[_estimable(r, X) for r in R]]
        if not len(R):
            rows.append({"term": term, "kind": kind, "df_num": 0, "note": "not estimable (missing cells)"})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ft = res.f_test(R)
        F = float(np.squeeze(ft.fvalue))
        dfn, dfd = float(ft.df_num), float(ft.df_denom)
        rows.append(
            {
                "term": term,
                "kind": kind,
                "df_num": dfn,
                "df_denom": dfd,
                "F": F,
                "p": float(ft.pvalue),
                "partial_eta2": F * dfn / (F * dfn + dfd) if np.isfinite(F) else math.nan,
                "note": "",
            }
        )
    return pd.DataFrame(rows), info


def ablation_effects(
    frame: pd.DataFrame,
    metric: str,
    axes: Sequence[str],
    *,
    block: str = "seed",
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
    model: tuple[pd.DataFrame, dict] | None = None,
    interval: str = "ols",
) -> pd.DataFrame:
    """Main effects (each non-reference level vs the first level of an axis, averaged over the other
    axes' level combinations) and two-way interactions (difference of differences for each pair of
    non-reference levels) in one group, each estimated two ways:

    * OLS (``ablation_model``): the contrast of the fitted cell means, its t interval and p;
    * stratified bootstrap: per stratum (the other axes' levels) the per-seed paired differences, each
      stratum weighted equally, seeds resampled within strata (percentile interval).

    The primary columns estimate, ci_low, ci_high, ci_method are the OLS ones by default (``interval``
    'ols': on a 2×2 design with 4 seeds the OLS t interval covers 95%, the stratified bootstrap about
    87%), the bootstrap ones with ``interval`` 'bootstrap' or where the model has no residual degrees of
    freedom. Columns: term, kind, axis, level, reference, estimate, ci_low, ci_high, ci_method,
    estimate_ols, ci_low_ols, ci_high_ols, p_ols, p_ols_bh, estimate_boot, ci_low_boot, ci_high_boot,
    ci_method_boot, strata, pairs."""
    if interval not in ("ols", "bootstrap"):
        raise ValueError(f"ablation interval {interval!r}: allowed values are ols, bootstrap")
    df = frame[ok_mask(frame, metric)]
    axes = [a for a in axes if df[a].nunique() > 1]
    terms, info = (
        model if model is not None else ablation_model(frame, metric, axes, block=block, confidence=confidence)
    )
    res, design = info.get("result"), info.get("design")
    gen = make_rng(rng)
    rows = []

    def ols(contrast_rows_plus, contrast_rows_minus) -> dict[str, float]:
        if res is None:
            return {}
        c = np.mean(contrast_rows_plus, axis=0) - np.mean(contrast_rows_minus, axis=0)
        if not _estimable(c, res.model.exog):
            return {"estimate_ols": math.nan}
        t = res.t_test(c[None, :])
        lo, hi = np.asarray(t.conf_int(alpha=1 - confidence)).ravel()
        return {
            "estimate_ols": float(np.squeeze(t.effect)),
            "ci_low_ols": float(lo),
            "ci_high_ols": float(hi),
            "p_ols": float(np.squeeze(t.pvalue)),
        }

    levels = {a: sorted(df[a].unique(), key=_sort_key) for a in axes}
    seeds_col = block if block in df else None

    def cell_series(sub: pd.DataFrame) -> pd.Series:
        return sub.groupby(seeds_col)[metric].mean() if seeds_col else sub[metric].reset_index(drop=True)

    for a in axes:
        others = [o for o in axes if o != a]
        ref = levels[a][0]
        for lv in levels[a][1:]:
            strata, combos = [], []
            for key, g in df.groupby(others, sort=True) if others else [((), df)]:
                pair = pd.concat(
                    [cell_series(g[g[a] == lv]).rename("x"), cell_series(g[g[a] == ref]).rename("y")],
                    axis=1,
                    join="inner",
                )
                if len(pair):
                    strata.append((pair["x"] - pair["y"]).to_numpy())
                    combos.append(dict(zip(others, _key(key))))
            est, ci = stratified_bootstrap(
                strata, mean_of_stratum_means, confidence=confidence, n_resamples=n_resamples, rng=gen
            )
            o = {}
            if design is not None and combos:
                o = ols([design.row({**c, a: lv}) for c in combos], [design.row({**c, a: ref}) for c in combos])
            rows.append(
                {
                    "term": a,
                    "kind": "main",
                    "axis": a,
                    "level": lv,
                    "reference": ref,
                    **o,
                    "estimate": est,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "ci_method": ci.method,
                    "strata": len(strata),
                    "pairs": int(sum(len(s) for s in strata)),
                }
            )
    for a, b in itertools.combinations(axes, 2):
        others = [o for o in axes if o not in (a, b)]
        ra, rb = levels[a][0], levels[b][0]
        for la, lb in itertools.product(levels[a][1:], levels[b][1:]):
            strata, combos = [], []
            for key, g in df.groupby(others, sort=True) if others else [((), df)]:
                cells = [
                    cell_series(g[(g[a] == x) & (g[b] == y)]).rename(f"c{i}")
                    for i, (x, y) in enumerate(((la, lb), (la, rb), (ra, lb), (ra, rb)))
                ]
                q = pd.concat(cells, axis=1, join="inner")
                if len(q):
                    strata.append((q["c0"] - q["c1"] - q["c2"] + q["c3"]).to_numpy())
                    combos.append(dict(zip(others, _key(key))))
            est, ci = stratified_bootstrap(
                strata, mean_of_stratum_means, confidence=confidence, n_resamples=n_resamples, rng=gen
            )
            o = {}
            if design is not None and combos:
                plus = [design.row({**c, a: la, b: lb}) for c in combos] + [
                    design.row({**c, a: ra, b: rb}) for c in combos
                ]
                minus = [design.row({**c, a: la, b: rb}) for c in combos] + [
                    design.row({**c, a: ra, b: lb}) for c in combos
                ]
                o = {k: (2 * v if k.startswith(("estimate", "ci_")) else v) for k, v in ols(plus, minus).items()}
            rows.append(
                {
                    "term": f"{a}:{b}",
                    "kind": "interaction",
                    "axis": f"{a}:{b}",
                    "level": f"{la} × {lb}",
                    "reference": f"{ra} × {rb}",
                    **o,
                    "estimate": est,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "ci_method": ci.method,
                    "strata": len(strata),
                    "pairs": int(sum(len(s) for s in strata)),
                }
            )
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    if "p_ols" in out:
        out["p_ols_bh"] = adjust_pvalues(out["p_ols"], "fdr_bh")
    out = out.rename(columns={c: f"{c}_boot" for c in ("estimate", "ci_low", "ci_high", "ci_method")})
    ols_ok = (
        np.isfinite(out["ci_low_ols"].astype(float)) if "ci_low_ols" in out else pd.Series(False, index=out.index)
    ) & (interval == "ols")
    for c in ("estimate", "ci_low", "ci_high"):
        out[c] = np.where(ols_ok, out.get(f"{c}_ols", np.nan), out[f"{c}_boot"])
    out["ci_method"] = np.where(ols_ok, "OLS t (seed as block)", out["ci_method_boot"])
    return out


def marginal_means(
    frame: pd.DataFrame,
    metric: str,
    by: Sequence[str],
    axes: Sequence[str],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
) -> pd.DataFrame:
    """Mean of ``metric`` at each level combination of ``by`` (e.g. two axes, for an interaction plot),
    averaged with equal weight over the other axes' level combinations (the strata), with a stratified
    bootstrap CI (runs resampled within strata). Columns: by..., mean, ci_low, ci_high, n, strata."""
    df = frame[ok_mask(frame, metric)]
    others = [a for a in axes if a not in by]
    gen = make_rng(rng)
    rows = []
    for key, g in df.groupby(list(by), sort=True):
        strata = [s[metric].to_numpy() for _, s in (g.groupby(others) if others else [((), g)])]
        est, ci = stratified_bootstrap(
            strata, mean_of_stratum_means, confidence=confidence, n_resamples=n_resamples, rng=gen
        )
        rows.append(
            {
                **dict(zip(by, _key(key))),
                "mean": est,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "n": len(g),
                "strata": len(strata),
                "ci_method": ci.method,
            }
        )
    return pd.DataFrame(rows)
