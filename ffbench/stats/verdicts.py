"""Multiple comparisons and verdicts: adjusted p-values (Holm, Bonferroni, BH), the verdict of an interval
against the ROPE, outlying seeds and their influence, the decisions of a family, the ROPE per dataset."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ffbench.stats.defaults import ALPHA, MIN_PAIRS, ROPE, VERDICTS
from ffbench.stats.intervals import t_interval


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Family-wise ('holm', 'bonferroni') or FDR ('fdr_bh') adjusted p-values (the same values as
    statsmodels' ``multipletests``, computed here in numpy because that function is slow enough to
    dominate simulations; other methods go to statsmodels). NaN p-values are not part of the family and
    stay NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    x = p[ok]
    m = len(x)
    order = np.argsort(x, kind="stable")
    ranked = x[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    elif method == "bonferroni":
        adj = np.minimum(1.0, m * ranked)
    elif method == "fdr_bh":
        adj = np.minimum(1.0, np.minimum.accumulate((m * ranked / np.arange(1, m + 1))[::-1])[::-1])
    else:
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(x, method=method)[1]
        return out
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def decision_level(p: Sequence[float], method: str = "holm", alpha: float = ALPHA) -> float:
    """The per-hypothesis level a* at which the step procedure ``method`` over the finite p-values ends:
    it rejects exactly the hypotheses with p < a* (ties aside). Holm with K rejections of M: α/(M − K)
    (α when all are rejected); Benjamini–Hochberg: Kα/M (α/M when K = 0); otherwise Bonferroni's α/M.
    Intervals at confidence 1 − a* are therefore exactly dual to the corrected decisions."""
    p = np.asarray(p, float)
    p = p[np.isfinite(p)]
    m = len(p)
    if not m:
        return alpha
    k = int((adjust_pvalues(p, method) < alpha).sum())
    if method == "holm":
        return alpha / (m - k) if k < m else alpha
    if method == "fdr_bh":
        return max(k, 1) * alpha / m
    return alpha / m


def verdict(
    n_pairs: int,
    dec_low: float,
    dec_high: float,
    p_adj: float,
    p_equiv_adj: float,
    rope: float,
    alpha: float = ALPHA,
    higher_is_better: bool = True,
    degenerate: bool = False,
    delta: float = math.nan,
) -> tuple[str, str]:
    """The verdict on 'method − reference' and the reason. One interval decides both claims: the
    *decision interval* [L, U] is the t interval of the mean paired difference at the level where the
    family's correction ends (``decision_level``), and the two claims of the comparison, 'differs'
    (paired t p, corrected: p_adj) and 'lies inside ±ROPE' (p_equiv, corrected: p_equiv_adj), are its
    duals: p_adj < α ⇔ the interval excludes 0, p_equiv_adj < α ⇔ it lies inside the ROPE.

    1. n_pairs < MIN_PAIRS (3), degenerate (all differences equal) or undefined tests: **insufficient
       evidence**, never a significance claim; such comparisons are not in the correction family.
    2. **equivalent** if p_equiv_adj < α (the interval lies inside the ROPE; if it also excludes 0 the
       difference is real but smaller than the ROPE, and the reason says so).
    3. **better** / **worse** if p_adj < α, by the sign of the difference (and ``higher_is_better``).
    4. otherwise **insufficient evidence** (the interval straddles 0 or the ROPE edge).
    """
    if n_pairs < MIN_PAIRS:
        return VERDICTS[3], f"only {n_pairs} paired seed(s); at least {MIN_PAIRS} needed"
    if degenerate:
        return VERDICTS[3], (
            f"degenerate: all {n_pairs} differences equal ({delta * 100:+.3g} pp); no variance, so "
            "no significance claim"
        )
    if not (np.isfinite(p_adj) and np.isfinite(p_equiv_adj)):
        return VERDICTS[3], "the tests of the difference are undefined"
    if p_equiv_adj < alpha:
        extra = "; it also excludes 0: a real difference smaller than the ROPE" if p_adj < alpha else ""
        return VERDICTS[1], f"the decision interval lies inside ±ROPE (corrected p < {alpha:g}){extra}"
    if p_adj < alpha:
        up = dec_low > 0 if np.isfinite(dec_low) else delta > 0
        good = up if higher_is_better else not up
        beyond = np.isfinite(dec_low) and (dec_low > rope or dec_high < -rope)
        return (VERDICTS[0] if good else VERDICTS[2]), (
            f"the decision interval excludes 0 (corrected p < {alpha:g})"
            + ("" if beyond else "; it reaches into the ROPE")
        )
    if np.isfinite(dec_low) and -rope <= dec_low and dec_high <= rope:
        return VERDICTS[3], "the decision interval lies inside ±ROPE only at the uncorrected level"
    return VERDICTS[3], "the decision interval includes 0 and extends beyond the ROPE"


def interval_verdict(low: float, high: float, rope: float, higher_is_better: bool = True) -> str:
    """The verdict rule of ``verdict`` read off an interval alone: equivalent inside ±rope, better / worse
    when it excludes 0, otherwise insufficient evidence."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return VERDICTS[3]
    if -rope <= low and high <= rope:
        return VERDICTS[1]
    if low > 0 or high < 0:
        return VERDICTS[0] if (low > 0) == higher_is_better else VERDICTS[2]
    return VERDICTS[3]


def outlying(x: Sequence[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Which values lie far outside the others, by the leave-one-out (externally studentised) residual:
    t_i = (x_i − mean of the others) / (SD of the others · √(1 + 1/(n − 1))), Student t on n − 2 degrees
    of freedom when the values are normal; a value is outlying when its two-sided p < alpha / n
    (Bonferroni over the n values), so normal values are flagged in at most ``alpha`` of samples at any n.
    The value itself never enters its own yardstick, so one collapsed seed cannot hide itself (a
    median/MAD rule at 3-10 values flags 13-29% of normal samples). Returns (mask, p per value); nothing
    is outlying below 3 values or when the others do not vary."""
    x = np.asarray(x, float)
    n = len(x)
    if n < 3:
        return np.zeros(n, bool), np.full(n, np.nan)
    others = np.array([np.delete(x, i) for i in range(n)])
    sd = others.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x - others.mean(axis=1)) / (sd * math.sqrt(1 + 1 / (n - 1)))
        p = np.where(sd > 0, 2 * stats.t.sf(np.abs(t), n - 2), np.nan)
    return np.nan_to_num(p, nan=1.0) < alpha / n, p


def seed_influence(
    d: Sequence[float],
    seeds: Sequence[Any],
    rope: float,
    confidence: float,
    *,
    higher_is_better: bool = True,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Does one seed decide this comparison? The t interval behind a verdict assumes roughly normal
    per-seed differences; one collapsed or exceptional seed breaks that and with it the interval's
    coverage. Over the paired differences ``d`` (one per seed): the ``outlying`` seeds (leave-one-out
    residual test at alpha / n), and for each the verdict without it (``interval_verdict`` of the t
    interval at ``confidence``, the family's decision level), and ``deciding``: the seeds whose removal
    alone changes the verdict (leave one seed out, when n − 1 ≥ MIN_PAIRS). ``flag`` names the outlying
    seeds and their leave-out verdicts ('' when no seed is outlying): the flag shown beside a verdict."""
    d = np.asarray(d, float)
    seeds = list(seeds)
    n = len(d)
    out: dict[str, Any] = {"deciding": [], "outlying": [], "flag": ""}
    if n < MIN_PAIRS:
        return out
    full = interval_verdict(*_t_bounds(d, confidence), rope, higher_is_better)
    without = [
        interval_verdict(*_t_bounds(np.delete(d, i), confidence), rope, higher_is_better)
        if n - 1 >= MIN_PAIRS
        else None
        for i in range(n)
    ]
    out["deciding"] = [seeds[i] for i in range(n) if without[i] is not None and without[i] != full]
    mask, p = outlying(d, alpha)
    far = np.flatnonzero(mask)
    out["outlying"] = [seeds[i] for i in far]
    out["flag"] = "; ".join(
        f"seed {seeds[i]} outlying (p {p[i]:.1g} < {alpha:g}/{n})"
        + ("" if without[i] is None else f", without it: {without[i]}")
        for i in far
    )
    return out


def _t_bounds(d: np.ndarray, confidence: float) -> tuple[float, float]:
    ci = t_interval(d, confidence)
    return ci.low, ci.high


def decide(
    n_pairs: np.ndarray,
    delta: np.ndarray,
    sd: np.ndarray,
    p_t: np.ndarray,
    p_equiv: np.ndarray,
    rope: np.ndarray,
    degenerate: np.ndarray,
    *,
    alpha: float = ALPHA,
    correction: str = "holm",
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """The decisions of one family of comparisons, over arrays (one entry per comparison). One
    correction over all the family's claims: the difference claim (p_t) and the equivalence claim
    (p_equiv) of every comparison that can reach a verdict (≥ MIN_PAIRS pairs, non-zero variance) form
    one family of 2m hypotheses, corrected together by ``correction`` (Holm: family-wise error ≤ α over
    difference and equivalence claims together). Comparisons that cannot reach a verdict are reported
    and left out of the family. The decision interval of each comparison is its t interval at
    1 − a* (``decision_level``), dual to the corrected claims. Returns arrays in_family, p_adj,
    p_equiv_adj, dec_low, dec_high, lists verdict and reason, and family_size (m), family_hypotheses
    (2m), decision_confidence (1 − a*)."""
    n = np.asarray(n_pairs, float)
    delta, sd = np.asarray(delta, float), np.asarray(sd, float)
    p_t, p_equiv = np.asarray(p_t, float), np.asarray(p_equiv, float)
    rope = np.broadcast_to(np.asarray(rope, float), n.shape)
    degenerate = np.broadcast_to(np.asarray(degenerate, bool), n.shape)
    elig = (n >= MIN_PAIRS) & np.isfinite(p_t) & np.isfinite(p_equiv) & ~degenerate
    m = int(elig.sum())
    p = np.concatenate([p_t[elig], p_equiv[elig]])
    adj = adjust_pvalues(p, correction)
    p_adj = np.full(n.shape, np.nan)
    p_eq_adj = np.full(n.shape, np.nan)
    p_adj[elig], p_eq_adj[elig] = adj[:m], adj[m:]
    a_star = decision_level(p, correction, alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = stats.t.ppf(1 - a_star / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    h = np.where(n >= 2, h, np.nan)
    lo, hi = delta - h, delta + h
    vs = [
        verdict(
            int(n[i]),
            lo[i],
            hi[i],
            p_adj[i],
            p_eq_adj[i],
            float(rope[i]),
            alpha,
            higher_is_better,
            bool(degenerate[i]),
            float(delta[i]),
        )
        for i in range(len(n))
    ]
    return {
        "in_family": elig,
        "p_adj": p_adj,
        "p_equiv_adj": p_eq_adj,
        "family_size": m,
        "family_hypotheses": 2 * m,
        "decision_confidence": 1 - a_star,
        "dec_low": lo,
        "dec_high": hi,
        "verdict": [v for v, _ in vs],
        "reason": [why for _, why in vs],
    }


def family_decisions(
    table: pd.DataFrame, *, alpha: float = ALPHA, correction: str = "holm", higher_is_better: bool = True
) -> pd.DataFrame:
    """``decide`` over a table with columns n_pairs, delta, sd_diff, p_t, p_equiv, rope, degenerate."""
    t = table
    res = decide(
        t["n_pairs"].to_numpy(),
        t["delta"].to_numpy(),
        t["sd_diff"].to_numpy(),
        t["p_t"].to_numpy(),
        t["p_equiv"].to_numpy(),
        t["rope"].to_numpy(),
        t["degenerate"].to_numpy(bool),
        alpha=alpha,
        correction=correction,
        higher_is_better=higher_is_better,
    )
    return pd.DataFrame(res, index=t.index)


def resolve_rope(rope: float | Mapping[str, float] | None, dataset: Any = None) -> float:
    """The ROPE half-width for ``dataset``: a number for all, or a mapping dataset -> number with an
    optional 'default' key; None gives ROPE (0.5 pp)."""
    if rope is None:
        return ROPE
    if isinstance(rope, Mapping):
        return float(rope.get(dataset, rope.get("default", ROPE)))
    return float(rope)
