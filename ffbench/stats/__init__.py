"""Statistics over the tidy results table: plain functions over numpy arrays and DataFrames.

No torch and no plotting here (figures.py draws what these functions return). The style is rliable's:
a tidy table in, plain arrays / DataFrames out, and every random draw from an explicit
``numpy.random.Generator``. An ``rng`` argument that is an int seeds a *fresh* Generator (PCG64), so an
estimate does not depend on what was computed before it; pass a Generator to share one stream.

Conventions (the defaults; every function takes them as arguments):

* Accuracies are fractions in [0, 1]; differences are ``method - reference`` (positive: the method is
  higher). Rows of different methods with the same other factor levels and the same seed are paired
  (common random numbers).
* Only rows with status 'done' and a finite metric enter an estimate (the survivors). A run that failed,
  diverged, or finished without a finite metric is a *failure*, an outcome in its own right (failure
  rates, exact tests, a worst-case sensitivity analysis); pending and running rows are *missing*. Both
  are counted and shown, never dropped silently.
* Intervals are 95%. Means of seeds and paired differences: the t interval by default (it keeps its
  coverage at 3-10 seeds, where bootstrap intervals are too narrow); BCa bootstrap (``N_RESAMPLES``
  resamples, percentile when BCa is undefined) on request. Every interval says which method made it.
* Comparison verdicts (``verdict``, ``compare``): one interval, one family; see those functions.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from ffbench.core.config import BOOKKEEPING, COMPUTE
from ffbench.core.correctness import decode_correct

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 10_000
SEED = 0
ROPE = 0.005  # 0.5 percentage points of accuracy, on each side of 0
POWER = 0.8
EFFECT_MULTIPLES = (1.0, 2.0)  # the seed advisor's default effects: the ROPE and twice it (smaller are never 'better')
WILCOXON_FLOOR = 6  # fewer pairs: the two-sided exact p cannot fall below 0.05 (smallest p at n=5 is 0.0625)
WILCOXON_EXACT_MAX_N = 400  # up to here the signed-rank p is exact (the whole sign-flip distribution, counted)
WILCOXON_DRAWS = 200_000  # beyond it: this many seeded random sign flips (Monte Carlo SE of p below 0.0012)
MIN_PAIRS = 3  # fewer paired seeds: no verdict ('insufficient evidence')
MIN_BOOTSTRAP_N = 3  # fewer values: no bootstrap interval
METRIC = "test_acc"
NA = "-"  # the level shown where an axis does not apply to a method (None in the store)
VERDICTS = ("better", "equivalent", "worse", "insufficient evidence")
FAILED = ("failed", "diverged")  # terminal statuses without a result; 'done' with a non-finite metric counts too
UNFINISHED = ("pending", "running")
INTERVALS = ("t", "BCa", "percentile", "auto")  # 'auto': t below BCA_MIN_N values, BCa from there on
BCA_MIN_N = 30
RHO = 0.0  # correlation of per-seed differences for the Bayesian correlated t-test (seeds on a fixed split)

NOT_FACTOR_PREFIXES = ("cfg.", "param.", "_")
METRIC_PREFIXES = ("val_", "test_", "train_", "best_")
BASE_FACTORS = ("method", "dataset", "backbone")


# ====================================================================== table helpers
def is_metric(column: str) -> bool:
    return column.startswith(METRIC_PREFIXES) or column in ("best_epoch",)


def infer_factors(frame: pd.DataFrame) -> list[str]:
    """Factor columns: neither bookkeeping, nor 'cfg.*' / 'param.*', nor compute, nor a metric, and not
    empty in every row. method, dataset and backbone first, then the ablation axes in table order."""
    rest = [
        c
        for c in frame.columns
        if c not in BOOKKEEPING
        and c not in COMPUTE
        and not c.startswith(NOT_FACTOR_PREFIXES)
        and not is_metric(c)
        and (c in BASE_FACTORS or frame[c].notna().any())
    ]
    return [c for c in BASE_FACTORS if c in rest] + [c for c in rest if c not in BASE_FACTORS]


def axes_of(factors: Sequence[str]) -> list[str]:
    """The ablation axes: the factors other than method, dataset and backbone."""
    return [f for f in factors if f not in BASE_FACTORS]


def levels_of(frame: pd.DataFrame, column: str) -> list:
    """The levels of a factor column, sorted, without '-' (not applicable)."""
    return sorted((v for v in frame[column].unique() if v != NA), key=_sort_key)


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, dict, tuple, set)):
        import json

        return json.dumps(v, sort_keys=True, default=str)
    return v


def prepare(
    frame: pd.DataFrame,
    factors: Sequence[str] | None = None,
    metric: str | None = None,
    suite_version: int | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``frame`` ready for grouping: one suite version (the latest unless given), factor values
    made hashable and missing levels shown as '-', ``metric`` present (NaN where absent) and float."""
    df = frame.copy()
    if "suite_version" in df and len(df) and df["suite_version"].nunique() > 1:
        v = df["suite_version"].max() if suite_version is None else suite_version
        df = df[df["suite_version"] == v]
    factors = list(factors) if factors is not None else infer_factors(df)
    for f in factors:
        if f not in df:
            df[f] = NA
        df[f] = df[f].map(_hashable).astype(object).where(df[f].notna(), NA)
    if metric is not None:
        df[metric] = pd.to_numeric(df[metric], errors="coerce") if metric in df else np.nan
        df[metric] = df[metric].astype(float)
    if "status" not in df:
        df["status"] = "done"
    return df.reset_index(drop=True), factors


def ok_mask(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Rows that enter an estimate: status 'done' and a finite metric."""
    values = pd.to_numeric(frame[metric], errors="coerce") if metric in frame else pd.Series(np.nan, frame.index)
    return (frame["status"] == "done") & np.isfinite(values.astype(float))


def failed_mask(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Runs that ended without a usable result: failed or diverged, or 'done' with a non-finite metric."""
    return frame["status"].isin(FAILED) | ((frame["status"] == "done") & ~ok_mask(frame, metric))


def status_counts(frame: pd.DataFrame, metric: str) -> dict[str, int]:
    """runs; n (usable); failures (``failed_mask``); missing (pending, running, or any other status)."""
    ok = ok_mask(frame, metric)
    failed = failed_mask(frame, metric)
    return {
        "runs": int(len(frame)),
        "n": int(ok.sum()),
        "failures": int(failed.sum()),
        "missing": int((~ok & ~failed).sum()),
    }


def _key(group: Any) -> tuple:
    return group if isinstance(group, tuple) else (group,)


group_key = _key  # a groupby key as a tuple, for one grouping column as for several


def rows_where(frame: pd.DataFrame, columns: Sequence[str], values: Sequence) -> pd.DataFrame:
    """The rows of ``frame`` whose ``columns`` hold ``values`` (every row for no columns)."""
    if not len(frame):
        return frame
    keep = np.ones(len(frame), bool)
    for c, v in zip(columns, values):
        keep &= (frame[c] == v).to_numpy()
    return frame[keep]


# ====================================================================== bootstrap
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


# ====================================================================== one sample, one cell
def iqm(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean`` at 0.25, as rliable)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def describe(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
    interval: str = "t",
) -> dict[str, Any]:
    """n, mean, SD, median, min, max and the CI of the mean of the finite values (``mean_interval`` by
    ``interval``; its method in ``ci_method``)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    ci = mean_interval(x, interval, confidence=confidence, n_resamples=n_resamples, rng=rng)
    return {
        "n": n,
        "mean": float(x.mean()) if n else math.nan,
        "sd": float(x.std(ddof=1)) if n > 1 else math.nan,
        "median": float(np.median(x)) if n else math.nan,
        "min": float(x.min()) if n else math.nan,
        "max": float(x.max()) if n else math.nan,
        **ci.as_dict(),
    }


def cell_table(
    frame: pd.DataFrame,
    metric: str = METRIC,
    by: Sequence[str] | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
    means: Sequence[str] = (),
) -> pd.DataFrame:
    """Per group of ``by`` (default: the inferred factors): runs, n (done, finite), failures, missing
    (pending/running), mean, SD, median, min, max and the CI of the mean (t by default; each group's
    interval from a fresh Generator seeded with ``rng``; an accuracy's interval clipped to [0, 1]); and for
    each column of ``means`` (compute figures such as ``epoch_time_s``) its mean over the same runs, as
    ``mean.<column>``. The one cell
    summary: the end-of-run table, the MLflow parent runs and the reports all read it."""
    df, factors = prepare(frame, by, metric)
    by = list(by) if by is not None else factors
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False) if by else [((), df)]:
        ok = ok_mask(g, metric)
        counts = status_counts(g, metric)
        d = describe(g.loc[ok, metric], confidence=confidence, n_resamples=n_resamples, rng=rng)
        if "acc" in metric and math.isfinite(d.get("ci_low", math.nan)):  # an accuracy lies in [0, 1]: clipping
            d["ci_low"], d["ci_high"] = max(0.0, d["ci_low"]), min(1.0, d["ci_high"])  # keeps the coverage
        extra = {
            f"mean.{c}": float(pd.to_numeric(g.loc[ok, c], errors="coerce").astype(float).mean())
            if c in g
            else math.nan
            for c in means
        }
        rows.append({**dict(zip(by, _key(key))), **counts, **{k: v for k, v in d.items() if k != "n"}, **extra})
    out = pd.DataFrame(rows)
    if len(out):
        out.attrs.update(metric=metric, confidence=confidence, n_resamples=n_resamples, seed=_seed_of(rng))
    return out


def executed(batched_seeds: Any) -> str:
    """How a run was executed, from its ``batched_seeds`` ('0,1,2': trained stacked with those seeds):
    'alone' or 'batched ×N'."""
    if batched_seeds is None or (isinstance(batched_seeds, float) and batched_seeds != batched_seeds):
        return "alone"
    return f"batched ×{len(str(batched_seeds).split(','))}"


def compute_table(
    frame: pd.DataFrame, columns: Sequence[str], by: Sequence[str], *, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Compute figures per group of ``by`` *and per way of execution* ('executed': 'alone' or 'batched
    ×N', ``executed``), so a row only ever averages runs measured alike: seeds trained stacked share one
    step, and each is given the batch's time (and memory) ÷ N, its per-seed share, which is not the time
    of a seed alone. Over the finished runs, per column of ``columns``: the mean and a t interval over
    the *independent* measurements only, one per run alone and one per batch (its seeds' equal shares
    are one measurement, not N), with ``ci_method`` saying so; one measurement gives no interval.
    ``saved_bytes_per_step`` 0 (no tensor saved for a backward pass: the method trains without one) is
    not a measurement of memory and counts as missing ('no_backward' counts such runs). Long format:
    by…, executed, quantity, runs, measurements, mean, ci_low, ci_high, ci_method, no_backward."""
    df = frame[frame["status"] == "done"].copy() if "status" in frame else frame.copy()
    batch = df["batched_seeds"] if "batched_seeds" in df else pd.Series(None, index=df.index, dtype=object)
    df["executed"] = [executed(b) for b in batch]
    df["_unit"] = [f"batch {b}" if e != "alone" else f"run {i}" for i, b, e in zip(df.index, batch, df["executed"])]
    rows = []
    for col in columns:
        if col not in df:
            continue
        v = pd.to_numeric(df[col], errors="coerce").astype(float)
        no_backward = v == 0 if col == "saved_bytes_per_step" else pd.Series(False, index=df.index)
        df["_v"] = v.where(~no_backward)
        df["_nb"] = no_backward
        for key, g in df.groupby([*by, "executed"], sort=True, dropna=False):
            units = g.dropna(subset=["_v"]).groupby("_unit")["_v"].mean().to_numpy(float)
            ci = t_interval(units, confidence)
            method = (
                "t over " + ("runs" if key[-1] == "alone" else "batches")
                if ci.method == "t"
                else "none (one measurement)"
                if len(units) == 1
                else ci.method
            )
            rows.append(
                {
                    **dict(zip([*by, "executed"], _key(key))),
                    "quantity": col,
                    "runs": len(g),
                    "measurements": len(units),
                    "mean": float(units.mean()) if len(units) else math.nan,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "ci_method": method,
                    "no_backward": int(g["_nb"].sum()),
                }
            )
    return pd.DataFrame(rows)


# ====================================================================== two samples
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


# ====================================================================== multiple comparisons, verdicts
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


def paired_values(frame: pd.DataFrame, metric: str, method_col: str, a: Any, b: Any) -> pd.DataFrame:
    """Seeds where both ``a`` and ``b`` have a usable value: columns seed, a, b. ``frame`` holds one
    stratum (all other factors fixed)."""
    ok = frame[ok_mask(frame, metric)]
    va = ok[ok[method_col] == a].groupby("seed")[metric].mean()
    vb = ok[ok[method_col] == b].groupby("seed")[metric].mean()
    both = pd.concat([va.rename("a"), vb.rename("b")], axis=1, join="inner").sort_index()
    return both.reset_index()


def seed_outcomes(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed of one cell: value (mean of the usable runs) and outcome 'ok' (a usable run), 'failed'
    (no usable run, a failed one) or 'missing' (neither: pending or running)."""
    if not len(frame):
        return pd.DataFrame(columns=["value", "outcome"])
    ok, failed = ok_mask(frame, metric), failed_mask(frame, metric)
    g = pd.DataFrame({"seed": frame["seed"], "value": frame[metric].where(ok), "ok": ok, "failed": failed})
    per = g.groupby("seed").agg(value=("value", "mean"), ok=("ok", "any"), failed=("failed", "any"))
    per["outcome"] = np.where(per["ok"], "ok", np.where(per["failed"], "failed", "missing"))
    return per[["value", "outcome"]]


def chance_level(frame: pd.DataFrame, chance: float | Mapping[str, float] | None = None) -> float:
    """Chance accuracy of a stratum: ``chance`` (a number, or dataset -> number), else 1 / num_classes
    from the table, else 0 (the worst case when the class count is unknown)."""
    if isinstance(chance, Mapping):
        ds = frame["dataset"].iloc[0] if "dataset" in frame and len(frame) else None
        if ds in chance:
            return float(chance[ds])
    elif chance is not None:
        return float(chance)
    k = pd.to_numeric(frame.get("num_classes", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(1 / k.iloc[0]) if len(k) and k.iloc[0] > 0 else 0.0


def failure_score(
    frame: pd.DataFrame, metric: str, chance: float | Mapping[str, float] | None = None, higher_is_better: bool = True
) -> float:
    """The value a failed run is scored at in the worst-case sensitivity analysis of a stratum: ``chance``
    where it gives one (in the metric's units); else, for a higher-is-better metric, chance accuracy
    (``chance_level``); for a lower-is-better one (a loss, whose chance level is not known here), the worst
    usable value of the stratum, its maximum."""
    given = chance is not None and not (
        isinstance(chance, Mapping)
        and ("dataset" not in frame or not len(frame) or frame["dataset"].iloc[0] not in chance)
    )
    if higher_is_better or given:
        return chance_level(frame, chance)
    values = frame.loc[ok_mask(frame, metric), metric].astype(float)
    return float(values.max()) if len(values) else math.nan


def _both_outcomes(outcomes_a: pd.DataFrame, outcomes_b: pd.DataFrame) -> pd.DataFrame:
    """Seeds with an outcome (ok or failed) on both sides: value_a, outcome_a, value_b, outcome_b."""
    both = outcomes_a.add_suffix("_a").join(outcomes_b.add_suffix("_b"), how="inner")
    return both[(both["outcome_a"] != "missing") & (both["outcome_b"] != "missing")]


def reliability(outcomes_a: pd.DataFrame, outcomes_b: pd.DataFrame, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Failure rates of two cells (failures / seeds with an outcome) with Clopper-Pearson intervals, and
    McNemar's exact test of the difference on the seeds where both have an outcome (paired by seed:
    common random numbers make a seed's two runs a pair). p is NaN when no seed is discordant (no
    evidence either way; the comparison stays out of the reliability family)."""
    out: dict[str, Any] = {}
    for side, o in (("method", outcomes_a), ("reference", outcomes_b)):
        done = o[o["outcome"] != "missing"]
        k, n = int((done["outcome"] == "failed").sum()), len(done)
        lo, hi = clopper_pearson(k, n, confidence)
        out.update(
            {
                f"fail_{side}": k,
                f"outcomes_{side}": n,
                f"fail_rate_{side}": k / n if n else math.nan,
                f"fail_rate_{side}_low": lo,
                f"fail_rate_{side}_high": hi,
            }
        )
    both = _both_outcomes(outcomes_a, outcomes_b)
    mc = mcnemar_exact(both["outcome_a"] == "failed", both["outcome_b"] == "failed")
    discordant = mc["only_a_failed"] + mc["only_b_failed"]
    out.update(
        fail_only_method=mc["only_a_failed"],
        fail_only_reference=mc["only_b_failed"],
        p_fail=mc["p"] if discordant else math.nan,
        fail_test=mc["test"],
    )
    return out


def _strata(df: pd.DataFrame, cols: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    if not cols:
        return [({}, df)]
    return [(dict(zip(cols, _key(k))), g) for k, g in df.groupby(cols, sort=True, dropna=False)]


def compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two strata can be paired when every factor agrees or is not applicable ('-') on one side (an
    axis that does not apply to the control: the control is compared with every level of it)."""
    return all(a[k] == b[k] or a[k] == NA or b[k] == NA for k in a)


def broadcast_na(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Rows whose level is '-' (axis not applicable) in a column that other rows give levels repeated once
    per level, so that a method an axis does not touch appears in every level's task."""
    for c in cols:
        if c not in df:
            continue
        levels = [v for v in df[c].unique() if v != NA]
        na = df[c] == NA
        if levels and na.any():
            df = pd.concat([df[~na]] + [df[na].assign(**{c: lv}) for lv in levels], ignore_index=True)
    return df


def merge_strata(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (a[k] if a[k] != NA else b[k]) for k in a}


def compare(
    frame: pd.DataFrame,
    metric: str = METRIC,
    *,
    control: str = "bp",
    factors: Sequence[str] | None = None,
    method_col: str = "method",
    confirmatory: Sequence[tuple[str, str]] | None = None,
    all_pairs: bool = False,
    rope: float | Mapping[str, float] | None = None,
    alpha: float = ALPHA,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
    confirmatory_correction: str = "holm",
    exploratory_correction: str = "fdr_bh",
    higher_is_better: bool = True,
    interval: str = "t",
    rho: float = RHO,
    chance: float | Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Paired comparisons within every stratum (the levels of all factors but ``method_col``); where an
    axis does not apply to one side ('-'), that side is paired with every level of the other (``compatible``).

    Confirmatory family: ``confirmatory`` (pairs (method, reference)) or, by default, every method
    against ``control``, with one ``confirmatory_correction`` (Holm) over the difference and equivalence
    claims of all its comparisons together (``family_decisions``). Exploratory family (``all_pairs``):
    every other pair of methods, Benjamini–Hochberg. One row per comparison: the stratum, method,
    reference, family, correction, runs and failures on each side, unpaired seeds, the
    ``paired_comparison`` columns, the family's decisions (p_adj, p_equiv_adj, the decision interval,
    verdict, reason), and the failure analysis:

    * ``reliability``: failure rates with exact intervals, McNemar's exact test on seed pairs (p_fail;
      p_fail_adj corrected within the family by the same method), and ``reliability_flag`` 'less
      reliable' (or 'more reliable') when the corrected test is significant;
    * ``one_seed``: the flag of ``seed_influence`` (a seed outlying by the leave-one-out residual test,
      with the verdict without it; '' when none), and the seeds whose removal alone changes the verdict
      (``deciding_seeds``) and the outlying ones (``outlying_seeds``);
    * a worst-case sensitivity analysis: every failed run scored at ``failure_score`` (chance accuracy,
      1/classes; for a lower-is-better metric ``chance`` or the stratum's worst value), the whole family
      decided again: sens_delta, sens_verdict, and ``survives_failures`` (the verdict is unchanged; always
      True when neither side failed).

    ``higher_is_better`` (False for a loss) turns every directional quantity: the verdicts, P(worse / ROPE
    / better), the paired and unpaired probabilities of superiority, and the failure score.

    Each comparison's bootstrap (if any) uses a fresh Generator seeded ``rng``.
    """
    df, factors = prepare(frame, factors, metric)
    strata_cols = [f for f in factors if f != method_col]
    methods = sorted(df[method_col].unique(), key=str)
    pairs: list[tuple[Any, Any, str]] = []
    declared = confirmatory if confirmatory is not None else [(m, control) for m in methods if m != control]
    for m, ref in declared:
        if m in methods and ref in methods and m != ref:
            pairs.append((m, ref, "confirmatory"))
    if all_pairs:
        seen = {frozenset(p[:2]) for p in pairs}
        for m, ref in itertools.combinations(methods, 2):
            if frozenset((m, ref)) not in seen:
                pairs.append((ref, m, "exploratory") if ref == control else (m, ref, "exploratory"))
    strata = {m: _strata(df[df[method_col] == m], strata_cols) for m in methods}
    rows, sens_rows, diffs = [], [], []
    for m, ref, family in pairs:
        for sa, ga in strata[m]:
            for sb, gb in strata[ref]:
                if not compatible(sa, sb):
                    continue
                stratum = merge_strata(sa, sb)
                g = pd.concat([ga, gb])
                pv = paired_values(g, metric, method_col, m, ref)
                ca, cb = status_counts(ga, metric), status_counts(gb, metric)
                r = resolve_rope(rope, stratum.get("dataset"))
                res = paired_comparison(
                    pv["a"].to_numpy(),
                    pv["b"].to_numpy(),
                    rope=r,
                    confidence=confidence,
                    n_resamples=n_resamples,
                    rng=rng,
                    interval=interval,
                    rho=rho,
                    higher_is_better=higher_is_better,
                )
                diffs.append((pv["a"].to_numpy(float) - pv["b"].to_numpy(float), list(pv["seed"]), r))
                oa, ob = seed_outcomes(ga, metric), seed_outcomes(gb, metric)
                rel = reliability(oa, ob, confidence)
                ch = failure_score(g, metric, chance, higher_is_better)
                both = _both_outcomes(oa, ob)
                sa_v = np.where(both["outcome_a"] == "failed", ch, both["value_a"])
                sb_v = np.where(both["outcome_b"] == "failed", ch, both["value_b"])
                sens = paired_comparison(
                    sa_v, sb_v, rope=r, interval="t", effects=False, higher_is_better=higher_is_better
                )
                sens_rows.append(
                    {
                        "family": family,
                        **{k: sens[k] for k in ("n_pairs", "delta", "sd_diff", "p_t", "p_equiv", "rope", "degenerate")},
                    }
                )
                rows.append(
                    {
                        **stratum,
                        "method": m,
                        "reference": ref,
                        "family": family,
                        "correction": confirmatory_correction if family == "confirmatory" else exploratory_correction,
                        "runs_method": ca["runs"],
                        "failures_method": ca["failures"],
                        "runs_reference": cb["runs"],
                        "failures_reference": cb["failures"],
                        "unpaired": ca["n"] + cb["n"] - 2 * res["n_pairs"],
                        "seeds": ",".join(str(s) for s in pv["seed"]),
                        **res,
                        **rel,
                        "chance": ch,
                    }
                )
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    sens = pd.DataFrame(sens_rows, index=out.index)
    parts = []
    for family, method in (("confirmatory", confirmatory_correction), ("exploratory", exploratory_correction)):
        sel = out["family"] == family
        if not sel.any():
            continue
        dec = family_decisions(out[sel], alpha=alpha, correction=method, higher_is_better=higher_is_better)
        sd = family_decisions(sens[sel], alpha=alpha, correction=method, higher_is_better=higher_is_better)
        dec["sens_delta"] = sens.loc[sel, "delta"]
        dec["sens_n_pairs"] = sens.loc[sel, "n_pairs"]
        dec["sens_verdict"] = sd["verdict"]
        dec["sens_reason"] = sd["reason"]
        dec["p_fail_adj"] = adjust_pvalues(out.loc[sel, "p_fail"], method)
        parts.append(dec)
    out = out.join(pd.concat(parts))
    out["p_tost_adj"] = out["p_equiv_adj"]  # the corrected equivalence claim (interval inside the ROPE)
    failures = (out["fail_method"] + out["fail_reference"]) > 0
    out["survives_failures"] = ~failures | (out["sens_verdict"] == out["verdict"])
    sig = out["p_fail_adj"] < alpha
    out["reliability_flag"] = np.where(
        sig & (out["fail_rate_method"] > out["fail_rate_reference"]),
        "less reliable",
        np.where(sig, "more reliable", ""),
    )
    influence = [
        seed_influence(d, seeds, r, conf, higher_is_better=higher_is_better, alpha=alpha)
        for (d, seeds, r), conf in zip(diffs, out["decision_confidence"])
    ]
    out["one_seed"] = [i["flag"] for i in influence]
    out["outlying_seeds"] = [",".join(map(str, i["outlying"])) for i in influence]
    out["deciding_seeds"] = [",".join(map(str, i["deciding"])) for i in influence]
    out["alpha"] = alpha
    out.attrs.update(
        metric=metric,
        alpha=alpha,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=rng,
        control=control,
        interval=interval,
        rho=rho,
    )
    return out


# ====================================================================== seed-count advisor
def _u_density(df: int) -> Callable[[float], float]:
    """Density of u = s/σ for a sample SD s on ``df`` degrees of freedom (u·√df ~ chi(df))."""
    return lambda u: float(stats.chi.pdf(u * math.sqrt(df), df) * math.sqrt(df))


def _integrate_u(f: Callable[[float], float], df: int) -> float:
    """∫ f(u) p(u) du over the distribution of s/σ (numerical quadrature; the reference for the
    closed forms, and their fallback where scipy's noncentral t is not finite)."""
    from scipy import integrate

    dens = _u_density(df)
    hi = math.sqrt(stats.chi2.ppf(1 - 1e-14, df) / df)
    mode = math.sqrt(max(df - 1, 0) / df)
    val, _ = integrate.quad(lambda u: f(u) * dens(u), 0, hi, points=[mode], limit=200, epsabs=1e-12)
    return float(min(1.0, max(0.0, val)))


def power_paired_integral(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test by numerical integration over the sample SD:
    ∫ [Φ̄(c·u − d√n) + Φ(−c·u − d√n)] p(u) du, c = t_{1−α/2, n−1}."""
    if n < 2:
        return math.nan
    c, nc = stats.t.ppf(1 - alpha / 2, n - 1), abs(d) * math.sqrt(n)
    return _integrate_u(lambda u: stats.norm.sf(c * u - nc) + stats.norm.cdf(-c * u - nc), n - 1)


def power_paired(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test for standardised effect d = Δ / SD(differences)
    with n pairs, from the noncentral t: P(T > c) + P(T < −c), each tail as an upper tail (``nct.sf``;
    scipy's ``nct.cdf`` returns NaN far in the lower tail), clipped to [0, 1]; the numerical integral
    where a tail is still not finite."""
    if n < 2 or not np.isfinite(d):
        return math.nan
    df, nc = n - 1, abs(d) * math.sqrt(n)
    c = stats.t.ppf(1 - alpha / 2, df)
    with np.errstate(all="ignore"):
        up, down = float(stats.nct.sf(c, df, nc)), float(stats.nct.sf(c, df, -nc))
    if not (np.isfinite(up) and np.isfinite(down)):
        return power_paired_integral(d, n, alpha)
    return float(min(1.0, max(0.0, up + down)))


def power_equivalence(rope_sd: float, n: int, alpha: float = ALPHA, effect_sd: float = 0.0) -> float:
    """Power of the equivalence claim used by the verdicts (the two-sided 1 − α t interval of the mean
    paired difference inside ±ROPE, i.e. TOST at α/2 per side) when the true difference is
    ``effect_sd`` SDs and the ROPE half-width is ``rope_sd`` SDs (both in units of the SD of the
    differences): ∫ [Φ((r − δ)√n − c·u) − Φ((−r − δ)√n + c·u)]₊ p(u) du, c = t_{1−α/2, n−1}."""
    if n < 2 or not (np.isfinite(rope_sd) and rope_sd > 0):
        return math.nan
    c, rn = stats.t.ppf(1 - alpha / 2, n - 1), math.sqrt(n)
    hi_z, lo_z = (rope_sd - effect_sd) * rn, (-rope_sd - effect_sd) * rn
    return _integrate_u(lambda u: max(0.0, stats.norm.cdf(hi_z - c * u) - stats.norm.cdf(lo_z + c * u)), n - 1)


def _smallest_n(power_at: Callable[[int], float], power: float, max_n: int) -> int | None:
    """The smallest n ≥ MIN_PAIRS with power_at(n) ≥ power (power grows with n): doubling, then bisection."""
    lo = hi = MIN_PAIRS
    while not power_at(hi) >= power:
        lo, hi = hi + 1, hi * 2
        if hi > max_n:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def seeds_needed(
    delta: float,
    sd_diff: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
    max_n: int = 10_000,
) -> int | None:
    """The smallest number of paired seeds (never below MIN_PAIRS, what a verdict needs) for which the
    paired t-test detects a true difference ``delta`` with the given ``power`` when the per-seed
    differences have SD ``sd_diff``, at level alpha / comparisons (Bonferroni, the worst case of Holm
    over that many hypotheses). SD 0 gives MIN_PAIRS. None when max_n is not enough or the input is
    undefined."""
    if not (np.isfinite(delta) and np.isfinite(sd_diff)) or delta == 0:
        return None
    if sd_diff == 0:
        return MIN_PAIRS
    d, a = abs(delta) / sd_diff, alpha / max(1, comparisons)
    return _smallest_n(lambda n: power_paired(d, n, a), power, max_n)


def seeds_needed_equivalence(
    rope: float,
    sd_diff: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
    true_delta: float = 0.0,
    max_n: int = 10_000,
) -> int | None:
    """The smallest number of paired seeds (≥ MIN_PAIRS) for which the equivalence claim
    (``power_equivalence``) holds with the given ``power`` when the true difference is ``true_delta``
    (0 by default) and the differences have SD ``sd_diff``, at level alpha / comparisons. None when
    |true_delta| ≥ rope, max_n is not enough, or the input is undefined."""
    if not (np.isfinite(rope) and np.isfinite(sd_diff)) or rope <= 0 or abs(true_delta) >= rope:
        return None
    if sd_diff == 0:
        return MIN_PAIRS
    a = alpha / max(1, comparisons)
    return _smallest_n(lambda n: power_equivalence(rope / sd_diff, n, a, true_delta / sd_diff), power, max_n)


def seed_advice(
    comparisons: pd.DataFrame,
    deltas: Sequence[float] | None = None,
    *,
    multiples: Sequence[float] = EFFECT_MULTIPLES,
    alpha: float = ALPHA,
    power: float = POWER,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """For every comparison with ≥2 pairs: the observed SD of the paired differences, its upper
    confidence bound (chi-square, one-sided at ``confidence``), and the paired seeds needed at ``power``
    (both at the observed SD and at the upper bound: a small pilot underestimates the SD about as often
    as not) for a difference claim (kind 'difference') and for the equivalence claim within the ROPE when
    the true difference is 0 (kind 'equivalence'). The level is α / (the number of hypotheses in the
    comparison's confirmatory family, 2 per comparison: Holm's worst case); exploratory comparisons use α.

    The effects advised for are those the verdict rule can call better or worse: a true difference inside
    the ROPE ends 'equivalent' as seeds grow, never 'better'. So the default effects are ``multiples`` of
    each comparison's ROPE (the ROPE itself and twice it); ``deltas``, when given, are absolute
    differences, and one smaller than the ROPE gets no seed count (``below_rope`` True)."""
    rows = []
    cols = list(comparisons.columns)
    strata = cols[: cols.index("method")] if "method" in cols else []
    for r in comparisons.to_dict("records"):
        n, sd = r["n_pairs"], r["sd_diff"]
        if n < 2 or not np.isfinite(sd):
            continue
        sd_hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1))
        fam = r.get("family_hypotheses", 2 * (r.get("family_size", 1) or 1))
        m = int(fam or 1) if r.get("family") == "confirmatory" else 1
        rope = r["rope"]
        base = {
            **{k: r[k] for k in strata},
            "method": r["method"],
            "reference": r["reference"],
            "n_pairs": n,
            "sd_diff": sd,
            "sd_diff_upper": sd_hi,
            "comparisons": m,
            "rope": rope,
        }
        targets = [rope * k for k in multiples] if deltas is None else sorted(set(deltas) | {rope})
        for delta in targets:
            below = abs(delta) < rope * (1 - 1e-9)
            rows.append(
                {
                    **base,
                    "kind": "difference",
                    "delta": delta,
                    "is_rope": math.isclose(delta, rope),
                    "below_rope": below,
                    "seeds_needed": None if below else seeds_needed(delta, sd, alpha=alpha, power=power, comparisons=m),
                    "seeds_needed_upper_sd": None
                    if below
                    else seeds_needed(delta, sd_hi, alpha=alpha, power=power, comparisons=m),
                }
            )
        rows.append(
            {
                **base,
                "kind": "equivalence",
                "delta": rope,
                "is_rope": True,
                "below_rope": False,
                "seeds_needed": seeds_needed_equivalence(rope, sd, alpha=alpha, power=power, comparisons=m),
                "seeds_needed_upper_sd": seeds_needed_equivalence(rope, sd_hi, alpha=alpha, power=power, comparisons=m),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(alpha=alpha, power=power, multiples=tuple(multiples))
    return out


# ====================================================================== per cell, for the tracker
def cell_summaries(
    frame: pd.DataFrame,
    control: str = "bp",
    rope: float | Mapping[str, float] | None = None,
    *,
    metric: str = METRIC,
    factors: Sequence[str] | None = None,
    alpha: float = ALPHA,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
) -> dict[str, dict[str, Any]]:
    """cell_id -> {n, mean, sd, median, ci_low, ci_high, failures, missing, delta, delta_ci_low,
    delta_ci_high, p_adj, verdict, reason, control, rope, and the Bayesian p_worse / p_rope / p_better}
    for logging on each cell's parent run.
    Verdicts are those of ``compare`` (each method vs ``control``, Holm over the whole table); the
    control's own cells get verdict 'control'."""
    df, factors = prepare(frame, factors, metric)
    cells = cell_table(df, metric, ["cell_id"] + list(factors), confidence=confidence, n_resamples=n_resamples, rng=rng)
    comp = compare(
        df,
        metric,
        control=control,
        factors=factors,
        rope=rope,
        alpha=alpha,
        confidence=confidence,
        n_resamples=n_resamples,
        rng=rng,
    )
    strata_cols = [f for f in factors if f != "method"]
    records = comp.to_dict("records") if len(comp) else []
    out: dict[str, dict[str, Any]] = {}
    for c in cells.to_dict("records"):
        s = {k: c[k] for k in ("n", "mean", "sd", "median", "ci_low", "ci_high", "failures", "missing", "runs")}
        s.update(
            metric=metric, control=control, rope=resolve_rope(rope, c.get("dataset")), n_resamples=n_resamples, seed=rng
        )
        hits = [
            r
            for r in records
            if r["method"] == c["method"]
            and r["reference"] == control
            and all(c[k] == NA or r[k] == c[k] for k in strata_cols)
        ]
        if c["method"] == control:
            s.update(verdict="control", delta=0.0)
        elif len(hits) == 1:
            r = hits[0]
            # the decision interval (Holm-corrected level): the one the verdict is read from
            s.update(
                delta=r["delta"],
                delta_ci_low=r["dec_low"],
                delta_ci_high=r["dec_high"],
                decision_confidence=r["decision_confidence"],
                n_pairs=r["n_pairs"],
                p_adj=r["p_adj"],
                verdict=r["verdict"],
                reason=r["reason"],
                reliability=r["reliability_flag"],
                survives_failures=bool(r["survives_failures"]),
                verdict_failures_as_chance=r["sens_verdict"],
                one_seed=r["one_seed"],
                p_worse=r["bayes_p_worse"],
                p_rope=r["bayes_p_rope"],
                p_better=r["bayes_p_better"],
            )
        elif hits:
            s.update(
                delta=math.nan,
                verdict=f"{len(hits)} comparisons (see the report)",
                reason="; ".join(sorted({r["verdict"] for r in hits})),
            )
        else:
            s.update(verdict="no control", delta=math.nan)
        out[c["cell_id"]] = s
    return out


# ====================================================================== factorial ablations
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


def _sort_key(v: Any):
    return (
        (0, v, "")
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        else (1, 0, str(v))
    )


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


# ====================================================================== across datasets / tasks
def treatments(df: pd.DataFrame, method_col: str = "method", axes: Sequence[str] = ()) -> pd.Series:
    """A label per row: the method, with the levels of the axes that apply to it ('sff[kernel=3]'). Axis
    levels are treatments, not blocks: a control without the axis is one treatment, never copied."""
    axes = [a for a in axes if a in df]
    if not axes:
        return df[method_col].astype(str)

    def label(row) -> str:
        lv = [
            f"{a}={int(v) if isinstance(v, float) and v.is_integer() else v}" for a, v in zip(axes, row[1:]) if v != NA
        ]
        return f"{row[0]}[{', '.join(lv)}]" if lv else str(row[0])

    return pd.Series([label(r) for r in df[[method_col] + axes].itertuples(index=False)], index=df.index, dtype=object)


def dataset_matrices(
    frame: pd.DataFrame,
    metric: str = METRIC,
    *,
    factors: Sequence[str] | None = None,
    method_col: str = "method",
    block: str = "dataset",
    strata: Sequence[str] | None = None,
) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """For the rank tests across datasets: per stratum (the levels of ``strata``; by default every factor
    other than the method, the block and the axes, i.e. the backbone: separate analyses), a matrix of
    blocks (the datasets, the independent units) × treatments (``treatments``: method and axis levels),
    each entry the mean of the usable runs. Blocks missing a treatment are dropped (complete blocks)."""
    df, factors = prepare(frame, factors, metric)
    axes = axes_of(factors)
    if strata is None:
        strata = [f for f in factors if f not in (method_col, block) and f not in axes]
    df = df[ok_mask(df, metric)].copy()
    if block not in df:
        df[block] = "all"
    df["_treatment"] = treatments(df, method_col, axes)
    out = []
    for key, g in df.groupby(list(strata), sort=True, dropna=False) if strata else [((), df)]:
        m = g.groupby([block, "_treatment"])[metric].mean().unstack("_treatment").dropna(axis=0, how="any")
        m.columns.name = None
        out.append((dict(zip(strata, _key(key))), m))
    return out


def task_matrix(
    frame: pd.DataFrame, metric: str = METRIC, *, factors: Sequence[str] | None = None, method_col: str = "method"
) -> pd.DataFrame:
    """Datasets (the blocks) × treatments (method and axis levels, and the backbone when there are
    several, as 'treatment @ backbone'): the mean of the usable runs. No row is copied: a control
    without an axis is one column. Datasets missing a treatment are dropped (complete blocks)."""
    parts = dataset_matrices(frame, metric, factors=factors, method_col=method_col)
    if len(parts) == 1:
        return parts[0][1]
    cols = []
    for stratum, m in parts:
        tag = " / ".join(str(v) for v in stratum.values())
        cols.append(m.rename(columns=lambda c, tag=tag: f"{c} @ {tag}"))
    return pd.concat(cols, axis=1).dropna(axis=0, how="any") if cols else pd.DataFrame()


def average_ranks(matrix: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Average rank of each method over the tasks (rank 1 = best; ties share the average rank)."""
    ranks = (-matrix if higher_is_better else matrix).rank(axis=1, method="average")
    return ranks.mean(axis=0).sort_values()


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of average ranks: q_α(k, ∞)/√2 · √(k(k+1)/(6N)) (Demšar 2006)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf)
    return float(q / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))


def friedman(matrix: pd.DataFrame, alpha: float = ALPHA, higher_is_better: bool = True) -> dict[str, Any]:
    """Friedman test over tasks (blocks) × methods with average ranks, the Iman–Davenport F version,
    the Nemenyi CD, and a note on the limits with few tasks."""
    k, n = matrix.shape[1], matrix.shape[0]
    out: dict[str, Any] = {
        "k": k,
        "N": n,
        "ranks": average_ranks(matrix, higher_is_better).to_dict(),
        "alpha": alpha,
        "chi2": math.nan,
        "p": math.nan,
        "F_iman_davenport": math.nan,
        "p_iman_davenport": math.nan,
        "cd_nemenyi": math.nan,
    }
    notes = []
    if k < 3 or n < 2:
        notes.append(
            f"the Friedman test needs ≥3 methods and ≥2 tasks (here k={k}, N={n}); see the pairwise comparisons instead"
        )
    else:
        cols = [matrix[c].to_numpy(float) for c in matrix.columns]
        if np.all(np.ptp(np.vstack(cols), axis=0) == 0):
            notes.append("all methods tie on every task")
        else:
            res = stats.friedmanchisquare(*cols)
            chi2 = float(res.statistic)
            out.update(chi2=chi2, p=float(res.pvalue))
            if n * (k - 1) - chi2 > 0:
                F = (n - 1) * chi2 / (n * (k - 1) - chi2)
                out.update(F_iman_davenport=F, p_iman_davenport=float(stats.f.sf(F, k - 1, (k - 1) * (n - 1))))
        out["cd_nemenyi"] = nemenyi_cd(k, n, alpha)
    if n < 5:
        cd = (
            f" and the Nemenyi CD ({out['cd_nemenyi']:.2f} ranks) rarely separates methods"
            if np.isfinite(out["cd_nemenyi"])
            else ""
        )
        notes.append(
            f"with only N={n} block(s) the rank tests have little power{cd}; per-task results and the "
            "paired comparisons are the primary evidence"
        )
    out["note"] = "; ".join(notes)
    return out


def wilcoxon_across(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of x − y across datasets (Demšar 2006's test for two methods over N
    datasets; ``wilcoxon_signed_rank``: exact p, zero differences dropped), with a note below its floor of 6."""
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[np.isfinite(d)]
    w = wilcoxon_signed_rank(d)
    out = {"N": len(d), "W": w["W"], "p": w["p"], "method": w["method"], "note": ""}
    if len(d) < WILCOXON_FLOOR:
        out["note"] = f"N={len(d)} < {WILCOXON_FLOOR}: two-sided p cannot fall below 0.05"
    return out


def control_rank_tests(
    matrix: pd.DataFrame, control: str, alpha: float = ALPHA, higher_is_better: bool = True
) -> pd.DataFrame:
    """Each treatment against ``control`` on the Friedman average ranks (Demšar 2006, §3.2.2):
    z = (R_i − R_control) / √(k(k+1)/(6N)), two-sided normal p, Holm over the k − 1 comparisons.
    Positive z: the treatment ranks worse (higher average rank) than the control."""
    k, n = matrix.shape[1], matrix.shape[0]
    if control not in matrix or k < 2 or n < 1:
        return pd.DataFrame()
    ranks = average_ranks(matrix, higher_is_better)
    se = math.sqrt(k * (k + 1) / (6 * n))
    rows = [
        {
            "treatment": t,
            "control": control,
            "N": n,
            "k": k,
            "rank": ranks[t],
            "rank_control": ranks[control],
            "z": (ranks[t] - ranks[control]) / se,
        }
        for t in matrix.columns
        if t != control
    ]
    out = pd.DataFrame(rows)
    out["p"] = 2 * stats.norm.sf(np.abs(out["z"]))
    out["p_holm"] = adjust_pvalues(out["p"], "holm")
    return out


def bayes_signed_rank(
    d: Sequence[float],
    rope: float = ROPE,
    *,
    prior: float = 0.5,
    n_samples: int = 50_000,
    rng: int | np.random.Generator | None = SEED,
) -> dict[str, Any]:
    """Bayesian signed-rank test (Benavoli et al. 2017) on per-dataset differences d (method − control):
    a Dirichlet process posterior over the distribution of differences, with a prior pseudo-observation
    at 0 of weight ``prior``. For each posterior draw of weights w over (0, d_1..d_N), θ_worse =
    Σ_ij w_i w_j [d_i + d_j < −2 rope] and θ_better likewise for > 2 rope (ties count half), θ_rope the
    rest; the probabilities are the shares of draws in which each θ is the largest."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    out = {
        "N": len(d),
        "p_worse": math.nan,
        "p_rope": math.nan,
        "p_better": math.nan,
        "prior": prior,
        "n_samples": n_samples,
        "seed": _seed_of(rng),
    }
    if not len(d):
        return out
    z = np.concatenate([[0.0], d])
    s = z[:, None] + z[None, :]
    below = (s < -2 * rope) + 0.5 * (s == -2 * rope)
    above = (s > 2 * rope) + 0.5 * (s == 2 * rope)
    alpha_w = np.ones(len(z))
    alpha_w[0] = prior
    w = make_rng(rng).dirichlet(alpha_w, n_samples)
    worse = np.einsum("si,ij,sj->s", w, below, w)
    better = np.einsum("si,ij,sj->s", w, above, w)
    theta = np.column_stack([worse, 1 - worse - better, better])
    share = np.bincount(theta.argmax(1), minlength=3) / n_samples
    out.update(p_worse=float(share[0]), p_rope=float(share[1]), p_better=float(share[2]))
    return out


def across_datasets(
    matrix: pd.DataFrame,
    control: str,
    *,
    rope: float = ROPE,
    alpha: float = ALPHA,
    higher_is_better: bool = True,
    rng: int = SEED,
) -> pd.DataFrame:
    """Each treatment against ``control`` across the datasets of one stratum (``dataset_matrices``): the
    mean difference, the Wilcoxon signed-rank test (Holm over the treatments), the rank z-test against
    the control (``control_rank_tests``, Holm), and the Bayesian signed-rank probabilities."""
    if control not in matrix or matrix.shape[1] < 2:
        return pd.DataFrame()
    rt = control_rank_tests(matrix, control, alpha, higher_is_better).set_index("treatment")
    rows = []
    for t in matrix.columns:
        if t == control:
            continue
        d = (matrix[t] - matrix[control]).to_numpy(float)
        w = wilcoxon_across(matrix[t], matrix[control])
        b = bayes_signed_rank(d if higher_is_better else -d, rope, rng=rng)
        rows.append(
            {
                "treatment": t,
                "control": control,
                "N": w["N"],
                "mean_diff": float(np.mean(d)),
                "wins": int((d > 0).sum() if higher_is_better else (d < 0).sum()),
                "wilcoxon_W": w["W"],
                "p_wilcoxon": w["p"],
                "wilcoxon_note": w["note"],
                "rank_z": rt.loc[t, "z"],
                "p_rank": rt.loc[t, "p"],
                "p_rank_holm": rt.loc[t, "p_holm"],
                "bayes_p_worse": b["p_worse"],
                "bayes_p_rope": b["p_rope"],
                "bayes_p_better": b["p_better"],
                "rope": rope,
            }
        )
    out = pd.DataFrame(rows)
    out["p_wilcoxon_holm"] = adjust_pvalues(out["p_wilcoxon"], "holm")
    return out


def normalized_scores(
    frame: pd.DataFrame,
    metric: str = METRIC,
    *,
    control: str = "bp",
    factors: Sequence[str] | None = None,
    method_col: str = "method",
    chance: float | Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per usable run: score = (acc − chance) / (mean control acc on the task − chance); 1 = the
    control's mean, 0 = chance. A task is a level combination of the base factors other than the
    method (dataset, backbone); the axis levels are part of the ``treatment`` (``treatments``), so the
    control's runs appear once. chance = 1/num_classes (from the table) unless given (a number or
    dataset -> number). Tasks without a usable control, or a control at or below chance, get NaN."""
    df, factors = prepare(frame, factors, metric)
    axes = axes_of(factors)
    tasks = [f for f in factors if f != method_col and f not in axes]
    df = df[ok_mask(df, metric)].copy()
    if not len(df):
        return df.assign(
            treatment=pd.Series(dtype=object),
            task=pd.Series(dtype=object),
            chance=pd.Series(dtype=float),
            score=pd.Series(dtype=float),
        )
    if isinstance(chance, Mapping):
        ch = df["dataset"].map(chance).astype(float)
    elif chance is not None:
        ch = pd.Series(float(chance), index=df.index)
    elif "num_classes" in df:
        ch = 1.0 / pd.to_numeric(df["num_classes"], errors="coerce")
    else:
        ch = pd.Series(0.0, index=df.index)
    df["chance"] = ch
    df["treatment"] = treatments(df, method_col, axes)
    df["task"] = df[tasks].astype(str).agg(" / ".join, axis=1) if tasks else "all"
    ctrl = df[df[method_col] == control].groupby("task")[metric].mean()
    base = df["task"].map(ctrl)
    denom = base - df["chance"]
    df["score"] = np.where(denom > 0, (df[metric] - df["chance"]) / denom.where(denom > 0), np.nan)
    return df


def optimality_gap(x: np.ndarray, axis: int = -1, target: float = 1.0) -> np.ndarray | float:
    """rliable's optimality gap: the mean shortfall below ``target`` (1 = the control's mean), mean(max(0, target − x))."""
    return np.mean(np.maximum(0.0, target - np.asarray(x, float)), axis=axis)


def probability_of_improvement(
    strata_a: Sequence[np.ndarray],
    strata_b: Sequence[np.ndarray],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int | np.random.Generator | None = SEED,
) -> tuple[float, Interval]:
    """rliable's probability of improvement: P(A > B) + ½ P(A = B) within each task (``prob_superiority``
    over the task's runs), averaged over tasks, with a stratified-bootstrap percentile interval (the runs
    of A and of B resampled within each task, tasks fixed)."""
    pairs = [(np.asarray(a, float), np.asarray(b, float)) for a, b in zip(strata_a, strata_b) if len(a) and len(b)]
    seed = _seed_of(rng)
    if not pairs:
        return math.nan, Interval(math.nan, math.nan, "none (no task with both)", confidence, 0, seed)
    point = float(np.mean([prob_superiority(a, b) for a, b in pairs]))
    gen = make_rng(rng)
    dist = np.zeros(n_resamples)
    for a, b in pairs:
        ra = a[gen.integers(0, len(a), (n_resamples, len(a)))]
        rb = b[gen.integers(0, len(b), (n_resamples, len(b)))]
        dist += prob_superiority(ra, rb)
    dist /= len(pairs)
    tail = (1 - confidence) / 2
    lo, hi = np.percentile(dist, [100 * tail, 100 * (1 - tail)])
    return point, Interval(float(lo), float(hi), "stratified percentile", confidence, n_resamples, seed)


def performance_profile(
    strata: Sequence[np.ndarray],
    taus: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    rng: int | np.random.Generator | None = SEED,
) -> pd.DataFrame:
    """rliable's score distribution: for each τ the fraction of runs with score > τ, every task weighted
    equally (the mean over tasks of each task's fraction), with a stratified-bootstrap percentile band."""
    strata = [np.asarray(s, float) for s in strata if len(s)]
    taus = np.asarray(taus, float)
    if not strata:
        return pd.DataFrame(columns=["tau", "fraction", "ci_low", "ci_high"])
    gen = make_rng(rng)
    point = np.mean([(s[:, None] > taus).mean(0) for s in strata], axis=0)
    dist = np.zeros((n_resamples, len(taus)))
    for s in strata:
        r = s[gen.integers(0, len(s), (n_resamples, len(s)))]
        dist += (r[:, :, None] > taus).mean(1)
    dist /= len(strata)
    tail = (1 - confidence) / 2
    lo, hi = np.percentile(dist, [100 * tail, 100 * (1 - tail)], axis=0)
    return pd.DataFrame({"tau": taus, "fraction": point, "ci_low": lo, "ci_high": hi})


def aggregate(
    frame: pd.DataFrame,
    metric: str = METRIC,
    *,
    control: str = "bp",
    factors: Sequence[str] | None = None,
    method_col: str = "method",
    chance: float | Mapping[str, float] | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
) -> pd.DataFrame:
    """rliable-style aggregate per treatment (method and axis levels) over all (tasks × seeds) of the
    normalised score (``normalized_scores``), over the *surviving* runs, with the failures counted next
    to it: the IQM, mean and optimality gap with stratified-bootstrap CIs (runs resampled within tasks;
    tasks fixed, so the claim is about these tasks), and the probability of improvement over the control
    (``probability_of_improvement``) with its stratified-bootstrap CI. The profile curves are in
    ``aggregate_profiles``."""
    df, factors = prepare(frame, factors, metric)
    sc = normalized_scores(df, metric, control=control, factors=factors, method_col=method_col, chance=chance)
    sc = sc[np.isfinite(sc["score"])]
    all_t = treatments(df, method_col, axes_of(factors))
    fails = df.assign(_t=all_t, _f=failed_mask(df, metric)).groupby("_t")["_f"].agg(["sum", "size"])
    gen = make_rng(rng)
    ctrl = {t: g["score"].to_numpy() for t, g in sc[sc[method_col] == control].groupby("task")}
    rows = []
    for m, g in sc.groupby("treatment", sort=True):
        by_task = {t: s["score"].to_numpy() for t, s in g.groupby("task")}
        strata = list(by_task.values())
        i, ci = stratified_bootstrap(strata, pooled(iqm), confidence=confidence, n_resamples=n_resamples, rng=gen)
        mu, mci = stratified_bootstrap(strata, pooled(np.mean), confidence=confidence, n_resamples=n_resamples, rng=gen)
        og, oci = stratified_bootstrap(
            strata, pooled(optimality_gap), confidence=confidence, n_resamples=n_resamples, rng=gen
        )
        is_ctrl = (g[method_col] == control).all()
        tasks = [t for t in by_task if t in ctrl]
        poi, pci = (
            probability_of_improvement(
                [by_task[t] for t in tasks],
                [ctrl[t] for t in tasks],
                confidence=confidence,
                n_resamples=n_resamples,
                rng=gen,
            )
            if not is_ctrl
            else (math.nan, Interval(math.nan, math.nan, "none (the control)"))
        )
        f = fails.loc[m] if m in fails.index else pd.Series({"sum": 0, "size": len(g)})
        rows.append(
            {
                "method": m,
                "tasks": len(strata),
                "runs": len(g),
                "failures": int(f["sum"]),
                "runs_total": int(f["size"]),
                "iqm": i,
                "iqm_ci_low": ci.low,
                "iqm_ci_high": ci.high,
                "mean": mu,
                "mean_ci_low": mci.low,
                "mean_ci_high": mci.high,
                "optimality_gap": og,
                "optimality_gap_ci_low": oci.low,
                "optimality_gap_ci_high": oci.high,
                "prob_improvement": poi,
                "prob_improvement_ci_low": pci.low,
                "prob_improvement_ci_high": pci.high,
                "ci_method": ci.method,
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(confidence=confidence, n_resamples=n_resamples, seed=rng, over="surviving runs")
    return out


def aggregate_profiles(
    frame: pd.DataFrame,
    metric: str = METRIC,
    *,
    control: str = "bp",
    factors: Sequence[str] | None = None,
    method_col: str = "method",
    chance: float | Mapping[str, float] | None = None,
    taus: Sequence[float] | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    rng: int = SEED,
) -> pd.DataFrame:
    """Performance profiles (``performance_profile``) of the normalised score per treatment: columns
    method, tau, fraction, ci_low, ci_high. τ from 0 to a little past the largest score by default."""
    sc = normalized_scores(frame, metric, control=control, factors=factors, method_col=method_col, chance=chance)
    sc = sc[np.isfinite(sc["score"])]
    if not len(sc):
        return pd.DataFrame(columns=["method", "tau", "fraction", "ci_low", "ci_high"])
    if taus is None:
        taus = np.linspace(min(0.0, sc["score"].min()), max(1.2, sc["score"].max()) + 1e-9, 61)
    gen = make_rng(rng)
    parts = [
        performance_profile(
            [s["score"].to_numpy() for _, s in g.groupby("task")],
            taus,
            confidence=confidence,
            n_resamples=n_resamples,
            rng=gen,
        ).assign(method=m)
        for m, g in sc.groupby("treatment", sort=True)
    ]
    return pd.concat(parts, ignore_index=True)[["method", "tau", "fraction", "ci_low", "ci_high"]]


# ====================================================================== sources of variance
def variance_sources(correct: Sequence[np.ndarray]) -> dict[str, Any]:
    """Where the uncertainty of a cell's mean accuracy comes from, given each seed's per-example test
    correctness (one boolean array per seed, the same test examples in the same order).

    * seeds: the between-seed variance of accuracy, var_s; the mean over k seeds carries var_s / k.
      On a fixed test set this is training randomness alone: every seed meets the same examples.
    * test set: the sampling variance of the test examples, which every seed shares (so it never shows
      in the seed spread, and a t interval over seeds leaves it out): var(μ_j) / N, μ_j the probability
      that a training run gets example j right. Estimated from the per-example bootstrap variance of the
      seed-averaged accuracy, var_j(c̄_j) / N (c̄_j the share of seeds right on example j; computed
      exactly, without resampling), less the seed noise it also holds, mean_j c̄_j(1 − c̄_j) / ((k − 1) N)
      (unbiased for binomial seed noise; clipped at 0; with one seed, not subtracted). The binomial
      p̄(1 − p̄)/N is given for comparison (the value when every example is a coin flip of the same p̄).

    Returns n_seeds, n_test, mean, sd_seed, se_seed, se_test, se_test_binomial, se_total, share_test,
    se_2x_seeds, se_2x_test (the SE with twice the seeds / twice the test set) and ``narrow_by``:
    'more seeds' or 'a larger test set', whichever halves the larger part of the variance.
    """
    arrs = [np.asarray(c, float) for c in correct]
    nan = math.nan
    out: dict[str, Any] = {
        "n_seeds": len(arrs),
        "n_test": len(arrs[0]) if arrs else 0,
        "mean": nan,
        "sd_seed": nan,
        "se_seed": nan,
        "se_test": nan,
        "se_test_binomial": nan,
        "se_total": nan,
        "share_test": nan,
        "se_2x_seeds": nan,
        "se_2x_test": nan,
        "narrow_by": "",
    }
    if not arrs or len({len(a) for a in arrs}) != 1 or not len(arrs[0]):
        return out
    c = np.vstack(arrs)  # seeds × examples
    k, n = c.shape
    acc = c.mean(1)
    p = float(acc.mean())
    var_seed = float(acc.var(ddof=1)) / k if k > 1 else nan
    cbar = c.mean(0)
    var_test = float(cbar.var()) / n
    if k > 1:
        var_test = max(0.0, var_test - float((cbar * (1 - cbar)).mean()) / ((k - 1) * n))
    out.update(
        mean=p,
        sd_seed=float(acc.std(ddof=1)) if k > 1 else nan,
        se_seed=math.sqrt(var_seed) if k > 1 else nan,
        se_test=math.sqrt(var_test),
        se_test_binomial=math.sqrt(p * (1 - p) / n),
    )
    if k > 1:
        total = var_seed + var_test
        out.update(
            se_total=math.sqrt(total),
            share_test=var_test / total if total > 0 else nan,
            se_2x_seeds=math.sqrt(var_seed / 2 + var_test),
            se_2x_test=math.sqrt(var_seed + var_test / 2),
            narrow_by="more seeds" if var_seed >= var_test else "a larger test set",
        )
    return out


def variance_table(
    frame: pd.DataFrame, metric: str = METRIC, by: Sequence[str] | None = None, bits: str = "test_correct_bits"
) -> pd.DataFrame:
    """``variance_sources`` per group of ``by`` (default: the factors) over the usable runs that stored
    their per-example test correctness (``bits`` and ``n_test``); groups without any are left out, and
    runs whose test-set size differs from the group's most common one are left out and counted."""
    if bits not in frame or "n_test" not in frame:
        return pd.DataFrame()
    df, factors = prepare(frame, by, metric)
    by = list(by) if by is not None else factors
    df = df[ok_mask(df, metric) & df[bits].map(lambda v: isinstance(v, str) and len(v) > 0)]
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False) if by else [((), df)]:
        n_test = pd.to_numeric(g["n_test"], errors="coerce")
        n0 = n_test.mode().iloc[0] if n_test.notna().any() else None
        use = g[n_test == n0] if n0 is not None else g.iloc[:0]
        if not len(use):
            continue
        arrs = [decode_correct(b, n0) for b in use[bits]]
        rows.append(
            {**dict(zip(by, _key(key))), "runs": len(use), "left_out": len(g) - len(use), **variance_sources(arrs)}
        )
    return pd.DataFrame(rows)


def search_variance(acc: np.ndarray) -> dict[str, Any]:
    """The hyperparameter-search part of a cell's uncertainty, from ``acc`` (repeats x seeds): row r holds
    the evaluation seeds' accuracy of the configuration chosen by repeat r of the search (the same seeds in
    every row). Additive model acc[r, s] = mu + a_r + b_s + e: the repeat means' variance holds var(a) +
    var(e)/k, and the residual mean square estimates var(e), so var_search = var_r(mean_r) - MSE/k
    (clipped at 0; with one seed, not subtracted). With few repeats this is a rough estimate: say so.

    Returns n_repeats, n_seeds, repeat_means, sd_search (the SD of the cell's mean over repeats of the
    search, seed noise removed) and sd_repeat_means (raw)."""
    a = np.asarray(acc, float)
    nan = math.nan
    out: dict[str, Any] = {
        "n_repeats": a.shape[0] if a.ndim == 2 else 0,
        "n_seeds": a.shape[1] if a.ndim == 2 else 0,
        "repeat_means": [],
        "sd_search": nan,
        "sd_repeat_means": nan,
    }
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1 or not np.isfinite(a).all():
        return out
    r, k = a.shape
    means = a.mean(1)
    var_means = float(means.var(ddof=1))
    var_search = var_means
    if k > 1:
        resid = a - means[:, None] - a.mean(0)[None, :] + a.mean()
        mse = float((resid**2).sum()) / ((r - 1) * (k - 1))
        var_search = max(0.0, var_means - mse / k)
    out.update(repeat_means=means.tolist(), sd_search=math.sqrt(var_search), sd_repeat_means=math.sqrt(var_means))
    return out


def search_variance_table(
    evaluation: pd.DataFrame, repeats: pd.DataFrame, metric: str = METRIC, by: Sequence[str] | None = None
) -> pd.DataFrame:
    """``search_variance`` per cell: the evaluation runs are repeat 0, the rows of role 'repeat' (``trial`` =
    repeat index) the later repeats; only seeds finished in every repeat enter (the others are counted)."""
    if repeats is None or not len(repeats) or not len(evaluation):
        return pd.DataFrame()
    ev, factors = prepare(evaluation, by, metric)
    rp, _ = prepare(repeats, by, metric)
    by = list(by) if by is not None else factors
    ev = ev[ok_mask(ev, metric)].assign(_repeat=0)
    rp = rp[ok_mask(rp, metric)].assign(_repeat=pd.to_numeric(rp["trial"], errors="coerce"))
    both = pd.concat([ev, rp], ignore_index=True)
    rows = []
    for key, g in both.groupby(by, sort=True, dropna=False) if by else [((), both)]:
        table = g.pivot_table(index="_repeat", columns="seed", values=metric, aggfunc="first")
        full = table.dropna(axis=1)
        if len(table) < 2 or full.shape[1] < 1:
            continue
        rows.append(
            {
                **dict(zip(by, _key(key))),
                "seeds_left_out": table.shape[1] - full.shape[1],
                **search_variance(full.to_numpy()),
            }
        )
    return pd.DataFrame(rows)


# ====================================================================== learning curves and per-layer diagnostics
def unit_indices(frame: pd.DataFrame, split: str = "test") -> list[int]:
    """Unit numbers K with '<split>_acc.unitK' in any run's curves."""
    ks = set()
    prefix = f"{split}_acc.unit"
    for curves in frame.get("curves", []):
        for row in curves or []:
            ks.update(int(k[len(prefix) :]) for k in row if k.startswith(prefix) and k[len(prefix) :].isdigit())
    return sorted(ks)


def _key_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return _hashable(v)


def curves_long(
    frame: pd.DataFrame, keys: Sequence[str] | None = None, series: Sequence[str] = ("val_acc", "test_acc")
) -> pd.DataFrame:
    """The 'curves' column unrolled: one row per (run, epoch, series) with columns run_id, seed, keys...,
    epoch, series, unit (0 for the model's own rule, K for 'unitK'), split, value. ``series`` entries
    ending in '.unit*' select every unit of that split; 'train_loss' etc. work too."""
    keys = list(keys) if keys is not None else infer_factors(frame)
    rows = []
    for r in frame.to_dict("records"):
        if r.get("status") != "done":
            continue
        for c in r.get("curves") or []:
            for name, value in c.items():
                base, _, unit = name.partition(".")
                wanted = name in series or (unit.startswith("unit") and f"{base}.unit*" in series)
                if not wanted or not isinstance(value, (int, float)) or not np.isfinite(value):
                    continue
                k = int(unit[4:]) if unit.startswith("unit") and unit[4:].isdigit() else 0
                rows.append(
                    {
                        "run_id": r["run_id"],
                        "seed": r["seed"],
                        **{f: _key_value(r.get(f)) for f in keys},
                        "epoch": c["epoch"],
                        "series": name,
                        "unit": k,
                        "split": base.split("_")[0],
                        "value": float(value),
                    }
                )
    return pd.DataFrame(rows)


def curve_bands(long: pd.DataFrame, by: Sequence[str], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean, SD, n and the t interval over seeds at every epoch of each group ``by`` (+ epoch)."""
    rows = []
    for key, g in long.groupby(list(by) + ["epoch"], sort=True, dropna=False):
        v = g["value"].to_numpy(float)
        ci = t_interval(v, confidence)
        rows.append(
            {
                **dict(zip(list(by) + ["epoch"], _key(key))),
                "mean": float(v.mean()),
                "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                "n": len(v),
                "ci_low": ci.low,
                "ci_high": ci.high,
            }
        )
    return pd.DataFrame(rows)


def first_reach(
    epochs: Sequence[float], values: Sequence[float], fraction: float = 0.9, reference: str = "final"
) -> float:
    """The first epoch at which ``values`` reach ``fraction`` × the reference accuracy ('final': the
    last epoch's value; 'max': the best value): Adamson's delay statistic for one layer of one run."""
    e, v = np.asarray(epochs, float), np.asarray(values, float)
    if not len(v):
        return math.nan
    order = np.argsort(e)
    e, v = e[order], v[order]
    target = fraction * (v[-1] if reference == "final" else np.max(v))
    hit = np.nonzero(v >= target)[0]
    return float(e[hit[0]]) if len(hit) else math.nan


def layer_delays(
    frame: pd.DataFrame,
    *,
    split: str = "test",
    fraction: float = 0.9,
    reference: str = "final",
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per run and unit (0 = the model's own rule): the delay (``first_reach``)."""
    long = curves_long(frame, keys, series=(f"{split}_acc", f"{split}_acc.unit*"))
    if not len(long):
        return pd.DataFrame()
    keys = [c for c in long.columns if c not in ("epoch", "series", "split", "value")]
    out = long.groupby(keys, sort=True, dropna=False).apply(
        lambda g: first_reach(g["epoch"], g["value"], fraction, reference), include_groups=False
    )
    out = out.rename("delay").reset_index()
    out.attrs.update(split=split, fraction=fraction, reference=reference)
    return out


def summarize_by(
    table: pd.DataFrame,
    value: str,
    by: Sequence[str],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    rng: int = SEED,
) -> pd.DataFrame:
    """``describe`` of ``value`` per group of ``by`` (mean, SD, median, bootstrap CI, n over seeds)."""
    rows = []
    gen = make_rng(rng)
    for key, g in table.groupby(list(by), sort=True, dropna=False):
        rows.append(
            {**dict(zip(by, _key(key))), **describe(g[value], confidence=confidence, n_resamples=n_resamples, rng=gen)}
        )
    return pd.DataFrame(rows)


EXACT_SPEARMAN_MAX_N = 7  # up to 7! = 5040 orderings: Spearman's p by exact permutation


def _corr(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """(statistic, two-sided p). Pearson: scipy's t-based p (exact under bivariate normality). Spearman:
    the exact permutation p for n ≤ 7 (the t approximation is far off there: a perfect ρ at n=3 has exact
    p = 1/3), scipy's approximation above. NaN for n < 3 or a constant input."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    if method == "pearson":
        res = stats.pearsonr(x, y)
        return float(res.statistic), float(res.pvalue)
    rho = float(stats.spearmanr(x, y).statistic)
    if len(x) <= EXACT_SPEARMAN_MAX_N:
        rx = stats.rankdata(x)
        ry = stats.rankdata(y)
        res = stats.permutation_test(
            (rx,),
            lambda a, axis=-1: _pearson_along(a, ry, axis),
            permutation_type="pairings",
            vectorized=True,
            n_resamples=10_000,
        )
        return rho, float(res.pvalue)
    return rho, float(stats.spearmanr(x, y).pvalue)


def _pearson_along(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))


def correlation_ci(r: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Fisher z interval of a correlation from n pairs (NaN when n ≤ 3 or r undefined)."""
    if n <= 3 or not np.isfinite(r):
        return math.nan, math.nan
    z = math.atanh(max(-0.999999, min(0.999999, r)))
    h = stats.norm.ppf(0.5 + confidence / 2) / math.sqrt(n - 3)
    return math.tanh(z - h), math.tanh(z + h)


def fisher_z_mean(r: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Average correlations through Fisher's z: r̄ = tanh(mean(atanh r)); the t interval of mean z over
    the runs, back-transformed; t and p of the one-sample t-test of H0 mean z = 0 (runs, not epochs,
    are the replicates, so autocorrelation within a run does not inflate it)."""
    r = np.asarray(r, float)
    r = r[np.isfinite(r)]
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    out = {"r_mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "runs": len(r), "t": math.nan, "p": math.nan}
    if not len(z):
        return out
    out["r_mean"] = float(np.tanh(z.mean()))
    if len(z) > 1:
        ci = t_interval(z, confidence)
        out.update(ci_low=float(np.tanh(ci.low)), ci_high=float(np.tanh(ci.high)))
        if z.std(ddof=1) > 0:
            res = stats.ttest_1samp(z, 0.0)
            out.update(t=float(res.statistic), p=float(res.pvalue))
    return out


def layer_correlations_within(
    frame: pd.DataFrame,
    *,
    split: str = "test",
    methods: Sequence[str] = ("pearson", "spearman"),
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Within each run, over epochs: the correlation of unit K's accuracy curve with the model's
    accuracy curve (statistic, p, n = epochs), for each correlation method. Needs ≥3 epochs and
    non-constant curves (else NaN)."""
    long = curves_long(frame, keys, series=(f"{split}_acc", f"{split}_acc.unit*"))
    if not len(long):
        return pd.DataFrame()
    keys = [c for c in long.columns if c not in ("epoch", "series", "split", "value", "unit")]
    rows = []
    for key, g in long.groupby(keys, sort=True, dropna=False):
        wide = g.pivot_table(index="epoch", columns="unit", values="value")
        if 0 not in wide:
            continue
        for k in [c for c in wide.columns if c != 0]:
            pair = wide[[0, k]].dropna()
            for m in methods:
                r, p = _corr(pair[k].to_numpy(), pair[0].to_numpy(), m)
                rows.append(
                    {**dict(zip(keys, _key(key))), "unit": k, "method_corr": m, "r": r, "p": p, "epochs": len(pair)}
                )
    return pd.DataFrame(rows)


def layer_correlations_across(
    frame: pd.DataFrame,
    *,
    split: str = "test",
    epoch: int | str = "last",
    methods: Sequence[str] = ("pearson", "spearman"),
    by: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Across seeds at a fixed epoch: the correlation between unit K's accuracy and the model's
    accuracy over the runs of each group ``by`` (statistic, n = runs, p). ``epoch``: an epoch number,
    'last' (the last epoch every run of the group reached) or 'selected' (the best-validation epoch's
    metrics '<split>_acc' and '<split>_acc.unitK' of each run). The interval is Fisher's z interval
    (tanh(atanh r ± z_{α/2}/√(n−3)); NaN for n ≤ 3), approximate for Spearman."""
    df, factors = prepare(frame)
    by = list(by) if by is not None else factors
    df = df[df["status"] == "done"]
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        if epoch == "selected":
            vals = g
            at = "selected"
        else:
            last = min((c[-1]["epoch"] for c in g["curves"] if c), default=None)
            at = last if epoch == "last" else int(epoch)
            if at is None:
                continue
            recs = [next((row for row in c if row["epoch"] == at), {}) for c in g["curves"]]
            vals = pd.DataFrame.from_records(recs)
        model = f"{split}_acc"
        if model not in vals:
            continue
        for k in sorted(
            int(c.rsplit("unit", 1)[1])
            for c in vals.columns
            if c.startswith(f"{split}_acc.unit") and c.rsplit("unit", 1)[1].isdigit()
        ):
            pair = vals[[model, f"{split}_acc.unit{k}"]].apply(pd.to_numeric, errors="coerce").dropna()
            for m in methods:
                r, p = _corr(pair.iloc[:, 1].to_numpy(float), pair.iloc[:, 0].to_numpy(float), m)
                lo, hi = correlation_ci(r, len(pair), confidence)
                rows.append(
                    {
                        **dict(zip(by, _key(key))),
                        "unit": k,
                        "epoch": at,
                        "method_corr": m,
                        "r": r,
                        "p": p,
                        "n": len(pair),
                        "ci_low": lo,
                        "ci_high": hi,
                    }
                )
    return pd.DataFrame(rows)


# ====================================================================== tuning budget curves
def expected_max(values: Sequence[float], k_max: int | None = None) -> np.ndarray:
    """Expected best of k trials drawn with replacement from the observed trial results (Dodge et al.
    2019): E[max_k] = Σ_i v_(i) [(i/N)^k − ((i−1)/N)^k], for k = 1..k_max (default N)."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    n = len(v)
    if not n:
        return np.array([])
    ks = np.arange(1, (k_max or n) + 1)
    i = np.arange(1, n + 1)
    w = (i[None, :] / n) ** ks[:, None] - ((i - 1)[None, :] / n) ** ks[:, None]
    return w @ v


def budget_curves(
    tuning: pd.DataFrame, metric: str = "val_acc", *, factors: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per group of factors (a cell's method, dataset, ...): for k = 1..N trials in trial order, the best
    ``metric`` so far (failed and pruned trials count as no improvement) and the expected best of k random
    trials drawn from the completed ones. Columns: factors..., k, trial, status, ``metric`` (the trial's own
    value), best_so_far, expected_max, trials, failures, pruned. The one budget curve: the end-of-run
    ``budget_curves.csv``, the MLflow parent runs and the reports all read it."""
    if tuning is None or not len(tuning):
        return pd.DataFrame()
    df, factors = prepare(tuning, factors, metric)
    rows = []
    for key, g in df.groupby(factors, sort=True, dropna=False):
        g = g.sort_values(["trial", "seed"], na_position="last")
        ok = ok_mask(g, metric)
        vals = g[metric].where(ok).to_numpy(float)
        best = np.fmax.accumulate(np.where(np.isfinite(vals), vals, -np.inf))
        em = expected_max(vals[np.isfinite(vals)], len(vals))
        trial, status, own = g["trial"].to_numpy(), g["status"].to_numpy(), g[metric].to_numpy(float)
        for k in range(1, len(vals) + 1):
            rows.append(
                {
                    **dict(zip(factors, _key(key))),
                    "k": k,
                    "trial": trial[k - 1],
                    "status": status[k - 1],
                    metric: own[k - 1],
                    "best_so_far": best[k - 1] if np.isfinite(best[k - 1]) else math.nan,
                    "expected_max": float(em[k - 1]) if len(em) else math.nan,
                    "trials": len(vals),
                    "failures": int((g["status"] == "failed").sum()),
                    "pruned": int((g["status"] == "pruned").sum()),
                }
            )
    return pd.DataFrame(rows)
