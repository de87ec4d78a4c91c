"""Two samples paired by seed: Hedges' g, probabilities of superiority, the paired t and equivalence tests,
the Bayesian correlated t-test and ``paired_comparison`` (everything about one pair of methods)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from ffbench.stats.defaults import CONFIDENCE, N_RESAMPLES, RHO, ROPE, SEED, WILCOXON_FLOOR
from ffbench.stats.intervals import (
    _seed_of,
    bootstrap_ci,
    clopper_pearson,
    make_rng,
    mean_interval,
    t_interval,
    wilcoxon_signed_rank,
)


def hedges_correction(df: float) -> float:
    """Exact small-sample bias correction J(df) = Γ(df/2) / (√(df/2) Γ((df-1)/2)) (Hedges 1981)."""
    if df <= 1:
        return math.nan
    return float(math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2))


def hedges_g(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Hedges' g = J(n_a + n_b - 2) · (mean_a − mean_b) / s_pooled, s_pooled from both samples' variances
    (for paired data with equal n this is d_av, the paired design's 'between-method' standardised
    difference; d_z, which power analysis uses, is in ``paired_comparison``). Vectorised along ``axis``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = a.shape[axis], b.shape[axis]
    va, vb = a.var(axis=axis, ddof=1), b.var(axis=axis, ddof=1)
    sp = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    scale = np.maximum(np.abs(a).max(axis=axis), np.abs(b).max(axis=axis))
    sp = np.where(sp <= 1e-12 * np.maximum(scale, 1e-300), np.nan, sp)  # no spread (up to rounding): undefined
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (a.mean(axis=axis) - b.mean(axis=axis)) / sp
    return d * hedges_correction(na + nb - 2)


def prob_superiority(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """P(A > B) + ½ P(A = B) over all (a, b) pairs: Mann–Whitney U₁/(n_a n_b) = Vargha–Delaney A₁₂
    (rliable's probability of improvement). Vectorised along ``axis``."""
    a, b = np.moveaxis(np.asarray(a, float), axis, -1), np.moveaxis(np.asarray(b, float), axis, -1)
    diff = a[..., :, None] - b[..., None, :]
    return ((diff > 0).sum((-1, -2)) + 0.5 * (diff == 0).sum((-1, -2))) / (a.shape[-1] * b.shape[-1])


def _d_z(d: np.ndarray, axis: int = -1):
    sd = d.std(axis=axis, ddof=1)
    sd = np.where(sd <= 1e-12 * np.maximum(np.abs(d).max(axis=axis), 1e-300), np.nan, sd)
    with np.errstate(divide="ignore", invalid="ignore"):
        return d.mean(axis=axis) / sd


def paired_tests(d: np.ndarray, rope: float = ROPE) -> dict[str, np.ndarray]:
    """The paired t-tests on differences ``d`` (shape (..., n), vectorised over the leading axes): n,
    delta, sd, t and two-sided p_t (H0: mean 0), p_tost (max of the one-sided tests against −rope and
    +rope) and p_equiv = min(1, 2 p_tost) (the p-value of 'the two-sided t interval lies inside ±rope').
    NaN where n < 2 or the SD is 0 (identical differences: the tests are undefined)."""
    d = np.asarray(d, float)
    n = d.shape[-1]
    delta = d.mean(-1) if n else np.full(d.shape[:-1], np.nan)
    sd = d.std(-1, ddof=1) if n > 1 else np.full(d.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(sd > 0, sd / math.sqrt(max(n, 1)), np.nan)
        t = delta / se
        df = max(n - 1, 1)
        p_t = 2 * stats.t.sf(np.abs(t), df)
        p_tost = np.maximum(stats.t.sf((delta + rope) / se, df), stats.t.cdf((delta - rope) / se, df))
    return {
        "n": n,
        "delta": delta,
        "sd": sd,
        "t": t,
        "p_t": p_t,
        "p_tost": p_tost,
        "p_equiv": np.minimum(1.0, 2 * p_tost),
    }


def paired_superiority(d: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Paired probability of superiority P(d > 0) + ½ P(d = 0) over the seeds' differences (the share of
    seeds on which the method wins), with the Clopper-Pearson interval of that share (a tie counts as
    half a win). Unlike the unpaired ``prob_superiority`` it uses the pairing: winning every seed by
    1 pp gives 1, not the unpaired 0.75 that overlapping seed spreads give."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan, math.nan, math.nan
    k = float((d > 0).sum() + 0.5 * (d == 0).sum())
    return (k / len(d), *clopper_pearson(k, len(d), confidence))


def bayes_correlated_t(d: Sequence[float], rope: float = ROPE, rho: float = RHO) -> dict[str, Any]:
    """Bayesian correlated t-test (Corani & Benavoli 2015) on per-seed differences d: under the
    (improper) prior of that paper, the posterior of the mean difference is Student t with n − 1
    degrees of freedom, location mean(d) and scale sqrt((1/n + ρ/(1 − ρ)) · var(d)). Returns
    P(worse) = P(μ < −rope), P(equivalent) = P(|μ| ≤ rope), P(better) = P(μ > rope) and ρ.

    ρ is the correlation between the differences: n_test/n_train for overlapping cross-validation
    training sets; 0 for seeds on a fixed split (the ffbench design: each seed is an independent
    training run evaluated on the same test set, whose sampling variance is in ``variance_sources``).
    Undefined (NaN) for n < 2 or zero variance (degenerate: all differences equal)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = len(d)
    out = {"p_worse": math.nan, "p_rope": math.nan, "p_better": math.nan, "rho": rho}
    if not 0 <= rho < 1:
        raise ValueError(f"rho={rho}: the correlation must lie in [0, 1)")
    if n < 2 or d.std(ddof=1) == 0:
        return out
    scale = math.sqrt((1 / n + rho / (1 - rho)) * d.var(ddof=1))
    worse = float(stats.t.cdf(-rope, n - 1, d.mean(), scale))
    better = float(stats.t.sf(rope, n - 1, d.mean(), scale))
    out.update(p_worse=worse, p_better=better, p_rope=max(0.0, 1 - worse - better))
    return out


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    rope: float = ROPE,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
    interval: str = "t",
    rho: float = RHO,
    effects: bool = True,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Everything about ``a`` vs ``b`` measured on the same seeds (``a[i]``, ``b[i]`` share seed i).

    Pairs where either value is not finite are dropped (counted in ``dropped``). Returns n_pairs, means,
    delta = mean(a − b), sd_diff, the interval of delta (``mean_interval`` by ``interval``, t by default),
    the paired t-test (t, df, p_t) and its t interval, the TOST equivalence p (two one-sided paired
    t-tests against ±rope) and p_equiv = min(1, 2 p_tost), the p-value of 'the two-sided t interval lies
    inside the ROPE' (the equivalence claim read off the same interval as the difference claim), the
    Wilcoxon signed-rank test (``wilcoxon_note`` below its floor of 6 pairs), the Bayesian correlated
    t-test (``bayes_correlated_t``), the paired probability of superiority P(d > 0) with its exact
    interval, and (``effects``) Hedges' g and the unpaired probability of superiority with bootstrap CIs,
    and d_z. When every difference is the same (SD 0) the tests are undefined: ``degenerate`` is True and
    the p-values are NaN (no significance claim from identical differences).
    p-values here are uncorrected; ``compare`` corrects them across a family.

    Direction: delta, its intervals, t, Hedges' g and d_z are signed, a − b in the metric's units. Every
    quantity that says *better* follows ``higher_is_better`` (False for a loss): P(worse / ROPE / better),
    the paired share of seeds on which ``a`` is better (``ps_paired``) and the unpaired P(a better than b)
    (``ps``); with a lower-is-better metric they equal those of the negated metric.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    dropped = int((~keep).sum())
    a, b = a[keep], b[keep]
    d = a - b
    n = len(d)
    nan = math.nan
    sd = float(d.std(ddof=1)) if n > 1 else nan
    degenerate = bool(n > 1 and sd == 0)
    out: dict[str, Any] = {
        "n_pairs": n,
        "dropped": dropped,
        "mean_a": float(a.mean()) if n else nan,
        "mean_b": float(b.mean()) if n else nan,
        "delta": float(d.mean()) if n else nan,
        "sd_diff": sd,
        "rope": rope,
        "degenerate": degenerate,
    }
    gen = make_rng(rng)  # one stream for the intervals of this comparison
    seed = _seed_of(rng)
    ci = mean_interval(d, interval, confidence=confidence, n_resamples=n_resamples, rng=gen)
    out.update(ci_low=ci.low, ci_high=ci.high, ci_method=ci.method, n_resamples=ci.n_resamples, seed=seed)
    tci = t_interval(d, confidence)
    tt = paired_tests(d, rope)
    out.update(
        t=float(tt["t"]),
        df=n - 1,
        p_t=float(tt["p_t"]),
        t_ci_low=tci.low,
        t_ci_high=tci.high,
        p_tost=float(tt["p_tost"]),
        p_equiv=float(tt["p_equiv"]),
    )
    note = ""
    if n < WILCOXON_FLOOR:
        note = f"n={n} < {WILCOXON_FLOOR}: two-sided p cannot fall below 0.05"
    wil = wilcoxon_signed_rank(d, rng=seed if seed is not None else SEED)
    if n >= 1 and not np.any(d != 0):
        note = (note + "; " if note else "") + "all differences are 0"
    out.update(wilcoxon_W=wil["W"], p_wilcoxon=wil["p"], wilcoxon_note=note, wilcoxon_method=wil["method"])
    gain = d if higher_is_better else -d  # positive: a is better
    bay = bayes_correlated_t(gain, rope, rho)
    out.update(bayes_p_worse=bay["p_worse"], bayes_p_rope=bay["p_rope"], bayes_p_better=bay["p_better"], bayes_rho=rho)
    ps_p, ps_p_lo, ps_p_hi = paired_superiority(gain, confidence)
    out.update(
        ps_paired=ps_p, ps_paired_ci_low=ps_p_lo, ps_paired_ci_high=ps_p_hi, d_z=float(_d_z(d)) if n > 1 else nan
    )
    if effects:
        g = float(hedges_g(a, b)) if n > 1 else nan
        g_ci = bootstrap_ci((a, b), hedges_g, paired=True, confidence=confidence, n_resamples=n_resamples, rng=gen)
        first, second = (a, b) if higher_is_better else (b, a)  # P(a better than b)
        ps = float(prob_superiority(first, second)) if n else nan
        ps_ci = bootstrap_ci(
            (first, second), prob_superiority, paired=True, confidence=confidence, n_resamples=n_resamples, rng=gen
        )
        out.update(
            hedges_g=g,
            g_ci_low=g_ci.low,
            g_ci_high=g_ci.high,
            g_ci_method=g_ci.method,
            ps=ps,
            ps_ci_low=ps_ci.low,
            ps_ci_high=ps_ci.high,
            ps_ci_method=ps_ci.method,
        )
    return out
