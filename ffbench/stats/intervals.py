"""Intervals and exact tests on one sample: the ``Interval`` record, seeded generators, BCa and stratified
bootstrap, t and Clopper-Pearson intervals, McNemar's exact test, the Wilcoxon signed-rank test."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ffbench.stats.defaults import (
    BCA_MIN_N,
    CONFIDENCE,
    INTERVALS,
    MIN_BOOTSTRAP_N,
    N_RESAMPLES,
    SEED,
    WILCOXON_DRAWS,
    WILCOXON_EXACT_MAX_N,
)


@dataclass(frozen=True)
class Interval:
    """A confidence interval and how it was made."""

    low: float
    high: float
    method: str  # 'BCa', 'percentile', 'percentile (BCa undefined)', 'stratified percentile', 't', 'point (...)'
    confidence: float = CONFIDENCE
    n_resamples: int = 0
    seed: int | None = None

    def as_dict(self, prefix: str = "ci") -> dict[str, Any]:
        return {f"{prefix}_low": self.low, f"{prefix}_high": self.high, f"{prefix}_method": self.method}


def make_rng(rng: int | np.random.Generator | None = SEED) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(SEED if rng is None else rng)


def _seed_of(rng: int | np.random.Generator | None) -> int | None:
    return None if isinstance(rng, np.random.Generator) else (SEED if rng is None else int(rng))


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def bootstrap_ci(
    data: Any,
    statistic: Callable | None = None,
    *,
    paired: bool = False,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
    method: str = "BCa",
) -> Interval:
    """Bootstrap CI of ``statistic`` (default: the mean) with ``scipy.stats.bootstrap``.

    ``data``: a 1-D array, or a tuple of 1-D arrays (resampled together when ``paired``). ``statistic``
    is vectorised like scipy's: ``statistic(*samples, axis=-1)``. BCa by default; when BCa is undefined
    (non-finite bounds, e.g. degenerate resamples) the percentile interval of the same resamples, with
    non-finite resamples left out (and counted in ``method``); all values equal gives a point interval;
    n < 3 gives NaN.
    """
    samples = tuple(np.asarray(d, float) for d in data) if isinstance(data, tuple) else (np.asarray(data, float),)
    stat = statistic or _mean
    seed = _seed_of(rng)
    n = min(len(s) for s in samples)
    if n < MIN_BOOTSTRAP_N:  # two values have 3 distinct resamples: no interval worth the name
        return Interval(math.nan, math.nan, f"none (n < {MIN_BOOTSTRAP_N})", confidence, 0, seed)
    point = float(stat(*samples, axis=-1))
    if all(np.ptp(s) == 0 for s in samples):
        return Interval(point, point, "point (all values equal)", confidence, 0, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            res = stats.bootstrap(
                samples,
                stat,
                paired=paired and len(samples) > 1,
                vectorized=True,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=make_rng(rng),
            )
    low, high = (float(v) for v in res.confidence_interval)
    used = method
    if not (np.isfinite(low) and np.isfinite(high)):
        dist = np.asarray(res.bootstrap_distribution, float)
        bad = int((~np.isfinite(dist)).sum())
        dist = dist[np.isfinite(dist)]
        if not len(dist):
            return Interval(math.nan, math.nan, "none (all resamples undefined)", confidence, n_resamples, seed)
        tail = (1 - confidence) / 2
        low, high = (float(v) for v in np.percentile(dist, [100 * tail, 100 * (1 - tail)]))
        used = "percentile (BCa undefined)" if method == "BCa" else method
        if bad:  # e.g. a standardised effect of a resample whose values are all equal
            used += f"; {bad} of {n_resamples} resamples undefined, left out"
    return Interval(low, high, used, confidence, n_resamples, seed)


def stratified_bootstrap(
    strata: Sequence[np.ndarray],
    statistic: Callable[[list[np.ndarray]], np.ndarray],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
) -> tuple[float, Interval]:
    """Stratified bootstrap (rliable's idea): resample with replacement *within* each stratum, keep the
    strata fixed. ``statistic`` takes a list of arrays shaped (B, n_j) -- one per stratum -- and returns
    (B,). Returns the point estimate and the percentile interval."""
    strata = [np.asarray(s, float) for s in strata if len(s)]
    seed = _seed_of(rng)
    if not strata:
        return math.nan, Interval(math.nan, math.nan, "none (no data)", confidence, 0, seed)
    point = float(np.asarray(statistic([s[None, :] for s in strata]))[0])
    if all(len(s) < 2 or np.ptp(s) == 0 for s in strata):
        if all(np.ptp(s) == 0 for s in strata) and any(len(s) >= 2 for s in strata):
            return point, Interval(point, point, "point (all values equal)", confidence, 0, seed)
        return point, Interval(math.nan, math.nan, "none (n < 2 in every stratum)", confidence, 0, seed)
    gen = make_rng(rng)
    draws = [s[gen.integers(0, len(s), size=(n_resamples, len(s)))] for s in strata]
    dist = np.asarray(statistic(draws), float)
    dist = dist[~np.isnan(dist)]
    tail = (1 - confidence) / 2
    low, high = np.percentile(dist, [100 * tail, 100 * (1 - tail)])
    return point, Interval(float(low), float(high), "stratified percentile", confidence, n_resamples, seed)


def pooled(statistic: Callable) -> Callable[[list[np.ndarray]], np.ndarray]:
    """For ``stratified_bootstrap``: apply ``statistic(x, axis=1)`` to all strata concatenated."""
    return lambda arrays: statistic(np.concatenate(arrays, axis=1), axis=1)


def mean_of_stratum_means(arrays: list[np.ndarray]) -> np.ndarray:
    """For ``stratified_bootstrap``: every stratum weighs the same (a marginal mean over cells)."""
    return np.mean([a.mean(axis=1) for a in arrays], axis=0)


def t_interval(x: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return Interval(math.nan, math.nan, "none (n < 2)", confidence)
    m, se = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    if se == 0:
        return Interval(float(m), float(m), "point (all values equal)", confidence)
    h = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * se
    return Interval(float(m - h), float(m + h), "t", confidence)


def mean_interval(
    x: Sequence[float],
    method: str = "t",
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
) -> Interval:
    """The interval of the mean of the finite values of ``x`` by ``method`` (``INTERVALS``): 't' (the
    default: at 3, 5 and 10 normal seeds it covers 95%, where BCa covers about 71%, 83% and 91%), 'BCa' or
    'percentile' bootstrap, or 'auto' (t below ``BCA_MIN_N`` values, BCa from there on)."""
    if method not in INTERVALS:
        raise ValueError(f"interval method {method!r}: allowed values are {', '.join(INTERVALS)}")
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if method == "auto":
        method = "t" if len(x) < BCA_MIN_N else "BCa"
    if method == "t":
        return t_interval(x, confidence)
    return bootstrap_ci(x, confidence=confidence, n_resamples=n_resamples, rng=rng, method=method)


def clopper_pearson(k: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k / n; (NaN, NaN) when n = 0."""
    if n <= 0:
        return math.nan, math.nan
    a = 1 - confidence
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def mcnemar_exact(fail_a: Sequence[bool], fail_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test on paired binary outcomes (a seed's run of A and of B): only the discordant
    seeds count, b = A failed and B not, c = B failed and A not; two-sided p = P(|X - m/2| ≥ |b - m/2|)
    for X ~ Binomial(m = b + c, 1/2) (``scipy.stats.binomtest``); p = 1 when m = 0."""
    fa, fb = np.asarray(fail_a, bool), np.asarray(fail_b, bool)
    b, c = int((fa & ~fb).sum()), int((fb & ~fa).sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"pairs": len(fa), "only_a_failed": b, "only_b_failed": c, "p": p, "test": "McNemar exact"}


def wilcoxon_signed_rank(
    d: Sequence[float],
    *,
    exact_max_n: int = WILCOXON_EXACT_MAX_N,
    n_draws: int = WILCOXON_DRAWS,
    rng: int | np.random.Generator | None = SEED,
) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of the finite differences ``d`` by its permutation distribution.

    Zero differences are dropped (Wilcoxon's rule, scipy's default) and tied |d| share their mid-rank.
    Under H0 each of the 2^n sign assignments of the n nonzero differences is equally likely; with
    W+ the rank sum of the positive ones, p = P(|W+ − E| ≥ |w+ − E|) over them. Up to ``exact_max_n``
    nonzero differences the distribution is counted exactly (a convolution over the doubled mid-ranks,
    which are integers: the same numbers as enumerating every assignment, at any n and with ties), so p
    is exact where scipy's ``method='auto'`` falls back to the normal approximation (ties or zeros, or
    n > 50). Beyond it: ``n_draws`` random sign flips from ``rng``, p = (hits + 1) / (draws + 1).
    Returns W = min(W+, W−) (scipy's statistic), p, n_nonzero, zeros and ``method`` ('exact', 'Monte
    Carlo (… sign flips, seed …)', or 'none (…)' with p NaN when every difference is 0)."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    nz = d[d != 0]
    n = len(nz)
    out: dict[str, Any] = {
        "W": math.nan,
        "p": math.nan,
        "n_nonzero": n,
        "zeros": len(d) - n,
        "method": "none (no nonzero difference)",
    }
    if not n:
        return out
    r2 = np.rint(2 * stats.rankdata(np.abs(nz))).astype(np.int64)  # mid-ranks are halves: doubled, integers
    total, w2 = int(r2.sum()), int(r2[nz > 0].sum())
    observed = abs(2 * w2 - total)  # 4 |W+ − E|, an integer
    out["W"] = min(w2, total - w2) / 2
    if n <= exact_max_n:
        dist = np.zeros(total + 1)
        dist[0] = 1.0
        for r in r2:  # each rank joins W+ with probability 1/2
            shifted = np.zeros_like(dist)
            shifted[r:] = dist[: total + 1 - r]
            dist = 0.5 * (dist + shifted)
        sums = np.arange(total + 1)
        p = float(dist[np.abs(2 * sums - total) >= observed].sum())
        out.update(p=min(1.0, p), method="exact")
        return out
    gen, hits, left = make_rng(rng), 0, n_draws
    while left:
        k = min(left, max(1, 2_000_000 // n))
        flips = gen.integers(0, 2, size=(k, n), dtype=np.int8)
        hits += int((np.abs(2 * (flips @ r2) - total) >= observed).sum())
        left -= k
    out.update(p=(hits + 1) / (n_draws + 1), method=f"Monte Carlo ({n_draws} sign flips, seed {_seed_of(rng)})")
    return out
