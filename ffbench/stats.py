"""Statistics over the tidy results table: plain functions over numpy arrays and DataFrames.

No torch and no plotting here (figures.py draws what these functions return). The style is rliable's:
a tidy table in, plain arrays / DataFrames out, and every random draw from an explicit
``numpy.random.Generator``. An ``rng`` argument that is an int seeds a *fresh* Generator (PCG64), so an
estimate does not depend on what was computed before it; pass a Generator to share one stream.

Conventions (the defaults; every function takes them as arguments):

* Accuracies are fractions in [0, 1]; differences are ``method - reference`` (positive: the method is
  higher). Rows of different methods with the same other factor levels and the same seed are paired
  (common random numbers).
* Only rows with status 'done' and a finite metric enter an estimate. Failed, pending and running rows are
  counted (``failures``, ``missing``) and shown, never dropped silently.
* Intervals are 95%: BCa bootstrap with ``N_RESAMPLES`` resamples (percentile when BCa is undefined,
  e.g. degenerate resamples; a point interval when all values are equal), t intervals where stated.
* Comparison verdicts (``verdict``): see that function for the decision rule.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special, stats

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 10_000
SEED = 0
ROPE = 0.005  # 0.5 percentage points of accuracy, on each side of 0
POWER = 0.8
WILCOXON_FLOOR = 6  # fewer pairs: the two-sided exact p cannot fall below 0.05 (smallest p at n=5 is 0.0625)
MIN_PAIRS = 3  # fewer paired seeds: no verdict ('insufficient evidence')
MIN_BOOTSTRAP_N = 3  # fewer values: no bootstrap interval
METRIC = "test_acc"
NA = "-"  # the level shown where an axis does not apply to a method (None in the store)
VERDICTS = ("better", "equivalent", "worse", "insufficient evidence")

BOOKKEEPING = ("run_id", "suite", "suite_version", "cell_id", "role", "seed", "trial", "status", "error",
               "attempts", "mlflow_run_id", "curves", "worker", "heartbeat", "started", "finished", "optuna_trial",
               "params", "manifest", "task", "group")
NOT_FACTOR_PREFIXES = ("cfg.", "param.", "_")
COMPUTE = ("device", "n_params", "n_train", "n_val", "n_test", "num_classes", "units", "train_time_s",
           "epoch_time_s", "images_per_s", "saved_bytes_per_step", "peak_mem_bytes")
METRIC_PREFIXES = ("val_", "test_", "train_", "best_")
BASE_FACTORS = ("method", "dataset", "backbone")


# ====================================================================== table helpers
def is_metric(column: str) -> bool:
    return column.startswith(METRIC_PREFIXES) or column in ("best_epoch",)


def infer_factors(frame: pd.DataFrame) -> list[str]:
    """Factor columns: neither bookkeeping, nor 'cfg.*' / 'param.*', nor compute, nor a metric, and not
    empty in every row. method, dataset and backbone first, then the ablation axes in table order."""
    rest = [c for c in frame.columns if c not in BOOKKEEPING and c not in COMPUTE
            and not c.startswith(NOT_FACTOR_PREFIXES) and not is_metric(c)
            and (c in BASE_FACTORS or frame[c].notna().any())]
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


def prepare(frame: pd.DataFrame, factors: Sequence[str] | None = None, metric: str | None = None,
            suite_version: int | None = None) -> tuple[pd.DataFrame, list[str]]:
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


def status_counts(frame: pd.DataFrame, metric: str) -> dict[str, int]:
    ok = ok_mask(frame, metric)
    failed = frame["status"] == "failed"
    return {"runs": int(len(frame)), "n": int(ok.sum()), "failures": int(failed.sum()),
            "missing": int((~ok & ~failed).sum())}


def _key(group: Any) -> tuple:
    return group if isinstance(group, tuple) else (group,)


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


def bootstrap_ci(data: Any, statistic: Callable | None = None, *, paired: bool = False,
                 confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 rng: int | np.random.Generator | None = SEED, method: str = "BCa") -> Interval:
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
            res = stats.bootstrap(samples, stat, paired=paired and len(samples) > 1, vectorized=True,
                                  confidence_level=confidence, n_resamples=n_resamples, method=method,
                                  rng=make_rng(rng))
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


def stratified_bootstrap(strata: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray], *,
                         confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                         rng: int | np.random.Generator | None = SEED) -> tuple[float, Interval]:
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
    h = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * se
    return Interval(float(m - h), float(m + h), "t", confidence)


# ====================================================================== one sample, one cell
def iqm(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean`` at 0.25, as rliable)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def describe(values: Sequence[float], *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
             rng: int | np.random.Generator | None = SEED) -> dict[str, Any]:
    """n, mean, SD, median, min, max and the bootstrap CI of the mean of the finite values."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    ci = bootstrap_ci(x, confidence=confidence, n_resamples=n_resamples, rng=rng)
    return {"n": n, "mean": float(x.mean()) if n else math.nan, "sd": float(x.std(ddof=1)) if n > 1 else math.nan,
            "median": float(np.median(x)) if n else math.nan, "min": float(x.min()) if n else math.nan,
            "max": float(x.max()) if n else math.nan, **ci.as_dict()}


def cell_table(frame: pd.DataFrame, metric: str = METRIC, by: Sequence[str] | None = None, *,
               confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
               rng: int | np.random.Generator | None = SEED) -> pd.DataFrame:
    """Per group of ``by`` (default: the inferred factors): runs, n (done, finite), failures, missing
    (pending/running), mean, SD, median, min, max and the 95% bootstrap CI of the mean (each group's
    interval from a fresh Generator seeded with ``rng``)."""
    df, factors = prepare(frame, by, metric)
    by = list(by) if by is not None else factors
    rows = []
    for key, g in (df.groupby(by, sort=True, dropna=False) if by else [((), df)]):
        ok = ok_mask(g, metric)
        counts = status_counts(g, metric)
        d = describe(g.loc[ok, metric], confidence=confidence, n_resamples=n_resamples, rng=rng)
        rows.append({**dict(zip(by, _key(key))), **counts, **{k: v for k, v in d.items() if k != "n"}})
    out = pd.DataFrame(rows)
    if len(out):
        out.attrs.update(metric=metric, confidence=confidence, n_resamples=n_resamples, seed=_seed_of(rng))
    return out


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


def paired_comparison(a: Sequence[float], b: Sequence[float], *, rope: float = ROPE,
                      confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      rng: int | np.random.Generator | None = SEED) -> dict[str, Any]:
    """Everything about ``a`` vs ``b`` measured on the same seeds (``a[i]``, ``b[i]`` share seed i).

    Returns n, means, delta = mean(a − b), sd_diff, the bootstrap CI of delta (paired resampling of
    seeds), the paired t-test (t, df, p_t) and its t interval, the TOST equivalence p (two one-sided
    paired t-tests against ±rope), the Wilcoxon signed-rank test (with ``wilcoxon_note`` when n is below
    its floor of 6 pairs), Hedges' g and the probability of superiority with bootstrap CIs, and d_z.
    p-values here are uncorrected; ``compare`` corrects them across a family.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = len(d)
    nan = math.nan
    out: dict[str, Any] = {"n_pairs": n, "mean_a": float(a.mean()) if n else nan,
                           "mean_b": float(b.mean()) if n else nan, "delta": float(d.mean()) if n else nan,
                           "sd_diff": float(d.std(ddof=1)) if n > 1 else nan, "rope": rope}
    gen = make_rng(rng)  # one stream for the three intervals of this comparison
    seed = _seed_of(rng)
    ci = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, rng=gen)
    out.update(ci_low=ci.low, ci_high=ci.high, ci_method=ci.method, n_resamples=ci.n_resamples, seed=seed)
    # paired t-test, its t interval and TOST
    t_stat = p_t = p_tost = nan
    tci = Interval(nan, nan, "none (n < 2)")
    if n >= 2:
        sd = d.std(ddof=1)
        if sd > 0:
            res = stats.ttest_rel(a, b)
            t_stat, p_t = float(res.statistic), float(res.pvalue)
            tci = t_interval(d, confidence)
            p_lo = stats.ttest_1samp(d, -rope, alternative="greater").pvalue
            p_hi = stats.ttest_1samp(d, rope, alternative="less").pvalue
            p_tost = float(max(p_lo, p_hi))
        else:  # every seed gives the same difference: the limits of the tests
            m = float(d.mean())
            t_stat = math.copysign(math.inf, m) if m else nan
            p_t = 0.0 if m else 1.0
            p_tost = 0.0 if abs(m) < rope else 1.0
            tci = Interval(m, m, "point (all differences equal)", confidence)
    out.update(t=t_stat, df=n - 1, p_t=p_t, t_ci_low=tci.low, t_ci_high=tci.high, p_tost=p_tost)
    # Wilcoxon signed-rank
    w = p_w = nan
    note = ""
    if n < WILCOXON_FLOOR:
        note = f"n={n} < {WILCOXON_FLOOR}: two-sided p cannot fall below 0.05"
    if n >= 1 and np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(d)
        w, p_w = float(res.statistic), float(res.pvalue)
    elif n >= 1:
        note = (note + "; " if note else "") + "all differences are 0"
    out.update(wilcoxon_W=w, p_wilcoxon=p_w, wilcoxon_note=note)
    # effect sizes with paired bootstrap CIs
    g = float(hedges_g(a, b)) if n > 1 else nan
    g_ci = bootstrap_ci((a, b), hedges_g, paired=True, confidence=confidence, n_resamples=n_resamples, rng=gen)
    ps = float(prob_superiority(a, b)) if n else nan
    ps_ci = bootstrap_ci((a, b), prob_superiority, paired=True, confidence=confidence,
                         n_resamples=n_resamples, rng=gen)
    out.update(hedges_g=g, g_ci_low=g_ci.low, g_ci_high=g_ci.high, g_ci_method=g_ci.method, ps=ps,
               ps_ci_low=ps_ci.low, ps_ci_high=ps_ci.high, ps_ci_method=ps_ci.method,
               d_z=float(_d_z(d)) if n > 1 else nan)
    return out


# ====================================================================== multiple comparisons, verdicts
def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """Family-wise ('holm', 'bonferroni') or FDR ('fdr_bh') adjusted p-values via statsmodels'
    ``multipletests``. NaN p-values are not part of the family and stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def verdict(n_pairs: int, ci_low: float, ci_high: float, p_adj: float, p_tost_adj: float, rope: float,
            alpha: float = ALPHA, higher_is_better: bool = True) -> tuple[str, str]:
    """The verdict on 'method − reference' and the reason, from the bootstrap CI [L, U] of the paired
    difference, the ROPE [−r, r], and the family-corrected p-values of the paired t-test (p_adj) and of
    the TOST equivalence test (p_tost_adj):

    1. n_pairs < MIN_PAIRS (3), or the interval or p undefined: **insufficient evidence**.
    2. **equivalent** if −r ≤ L and U ≤ r and p_tost_adj < α (the whole CI inside the ROPE, and
       equivalence shown by the corrected TOST). Checked first: a difference that is significant but
       lies wholly inside the ROPE is equivalent (the reason says so).
    3. **better** if p_adj < α and L > 0 (with higher_is_better; for lower-is-better metrics, U < 0).
    4. **worse** if p_adj < α and U < 0 (mirror image).
    5. otherwise **insufficient evidence** (the CI straddles 0 or the ROPE edge, or the corrected p ≥ α).

    A claim thus needs both the t-based corrected test (valid at small n) and the bootstrap CI (no
    normality assumption) to agree.
    """
    if n_pairs < MIN_PAIRS:
        return VERDICTS[3], f"only {n_pairs} paired seed(s); at least {MIN_PAIRS} needed"
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return VERDICTS[3], "the interval of the difference is undefined"
    inside = -rope <= ci_low and ci_high <= rope
    sig = np.isfinite(p_adj) and p_adj < alpha
    if inside and np.isfinite(p_tost_adj) and p_tost_adj < alpha:
        extra = "; the difference is significant but smaller than the ROPE" if sig and (ci_low > 0 or ci_high < 0) else ""
        return VERDICTS[1], f"CI within ±ROPE and corrected TOST p < {alpha:g}{extra}"
    up, down = ci_low > 0, ci_high < 0
    if sig and (up or down):
        good = up if higher_is_better else down
        return (VERDICTS[0] if good else VERDICTS[2]), (
            f"corrected p < {alpha:g} and CI excludes 0" + ("" if (ci_low > rope or ci_high < -rope)
                                                            else "; CI reaches into the ROPE"))
    if inside:
        return VERDICTS[3], f"CI within ±ROPE but corrected TOST p ≥ {alpha:g}"
    if up or down:
        return VERDICTS[3], f"CI excludes 0 but corrected p ≥ {alpha:g}"
    return VERDICTS[3], "CI includes 0 and extends beyond the ROPE"


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


def compare(frame: pd.DataFrame, metric: str = METRIC, *, control: str = "bp", factors: Sequence[str] | None = None,
            method_col: str = "method", confirmatory: Sequence[tuple[str, str]] | None = None,
            all_pairs: bool = False, rope: float | Mapping[str, float] | None = None,
            alpha: float = ALPHA, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
            rng: int = SEED, confirmatory_correction: str = "holm", exploratory_correction: str = "fdr_bh",
            higher_is_better: bool = True) -> pd.DataFrame:
    """Paired comparisons within every stratum (the levels of all factors but ``method_col``); where an
    axis does not apply to one side ('-'), that side is paired with every level of the other (``compatible``).

    Confirmatory family: ``confirmatory`` (pairs (method, reference)) or, by default, every method
    against ``control``; Holm across all of them in the table (applied separately to the difference
    tests and to the TOST equivalence tests). Exploratory family (``all_pairs``): every other pair of
    methods, Benjamini–Hochberg. One row per comparison: the stratum, method, reference, family,
    correction, failures on each side, unpaired seeds, the ``paired_comparison`` columns, p_adj,
    p_tost_adj, verdict and its reason. Each comparison's bootstrap uses a fresh Generator seeded ``rng``.
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
    rows = []
    for m, ref, family in pairs:
        for sa, ga in strata[m]:
            for sb, gb in strata[ref]:
                if not compatible(sa, sb):
                    continue
                stratum = merge_strata(sa, sb)
                g = pd.concat([ga, gb])
                pv = paired_values(g, metric, method_col, m, ref)
                ca, cb = status_counts(ga, metric), status_counts(gb, metric)
                res = paired_comparison(pv["a"].to_numpy(), pv["b"].to_numpy(),
                                        rope=resolve_rope(rope, stratum.get("dataset")), confidence=confidence,
                                        n_resamples=n_resamples, rng=rng)
                rows.append({**stratum, "method": m, "reference": ref, "family": family,
                             "correction": confirmatory_correction if family == "confirmatory" else exploratory_correction,
                             "runs_method": ca["runs"], "failures_method": ca["failures"],
                             "runs_reference": cb["runs"], "failures_reference": cb["failures"],
                             "unpaired": ca["n"] + cb["n"] - 2 * res["n_pairs"],
                             "seeds": ",".join(str(s) for s in pv["seed"]), **res})
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    out["p_adj"] = np.nan
    out["p_tost_adj"] = np.nan
    for family, method in (("confirmatory", confirmatory_correction), ("exploratory", exploratory_correction)):
        sel = out["family"] == family
        if sel.any():
            out.loc[sel, "p_adj"] = adjust_pvalues(out.loc[sel, "p_t"], method)
            out.loc[sel, "p_tost_adj"] = adjust_pvalues(out.loc[sel, "p_tost"], method)
        out.loc[sel, "family_size"] = int(np.isfinite(out.loc[sel, "p_t"]).sum())
    verdicts = [verdict(r.n_pairs, r.ci_low, r.ci_high, r.p_adj, r.p_tost_adj, r.rope, alpha, higher_is_better)
                for r in out.itertuples()]
    out["verdict"] = [v for v, _ in verdicts]
    out["reason"] = [why for _, why in verdicts]
    out["alpha"] = alpha
    out.attrs.update(metric=metric, alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=rng,
                     control=control)
    return out


# ====================================================================== seed-count advisor
def power_paired(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test for standardised effect d = Δ / SD(differences)
    with n pairs, from the noncentral t (statsmodels' TTestPower)."""
    from statsmodels.stats.power import TTestPower

    if n < 2:
        return math.nan
    return float(TTestPower().power(effect_size=abs(d), nobs=n, alpha=alpha, alternative="two-sided"))


def seeds_needed(delta: float, sd_diff: float, *, alpha: float = ALPHA, power: float = POWER,
                 comparisons: int = 1, max_n: int = 10_000) -> int | None:
    """The smallest number of paired seeds for which the paired t-test detects a true difference
    ``delta`` with the given ``power`` when the per-seed differences have SD ``sd_diff``, at level
    alpha / comparisons (Bonferroni, the worst case of Holm over that many comparisons). None when
    max_n is not enough or the input is undefined."""
    if not (np.isfinite(delta) and np.isfinite(sd_diff)) or delta == 0:
        return None
    if sd_diff == 0:
        return 2
    d = abs(delta) / sd_diff
    a = alpha / max(1, comparisons)
    lo, hi = 2, 2
    while power_paired(d, hi, a) < power:  # exponential then binary search (power grows with n)
        lo, hi = hi, hi * 2
        if hi > max_n:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if power_paired(d, mid, a) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def seed_advice(comparisons: pd.DataFrame, deltas: Sequence[float] = (0.002, 0.005, 0.01), *,
                alpha: float = ALPHA, power: float = POWER, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """For every comparison with ≥2 pairs: the observed SD of the paired differences, its upper
    confidence bound (chi-square, one-sided at ``confidence``), and the paired seeds needed to detect
    each Δ in ``deltas`` (and the comparison's ROPE) at ``power``, both at the observed SD and at the
    upper bound (a small pilot underestimates the SD about as often as not), with the family size of
    the comparison's correction as the Bonferroni divisor for confirmatory (Holm) families."""
    rows = []
    keep = [c for c in comparisons.columns if c not in ("seeds",)]
    strata = [c for c in keep if c not in _COMPARISON_COLUMNS]
    for r in comparisons.to_dict("records"):
        n, sd = r["n_pairs"], r["sd_diff"]
        if n < 2 or not np.isfinite(sd):
            continue
        sd_hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1))
        m = int(r.get("family_size", 1) or 1) if r.get("family") == "confirmatory" else 1
        base = {**{k: r[k] for k in strata}, "method": r["method"], "reference": r["reference"], "n_pairs": n,
                "sd_diff": sd, "sd_diff_upper": sd_hi, "comparisons": m}
        targets = list(deltas) + ([r["rope"]] if r["rope"] not in deltas else [])
        for delta in targets:
            rows.append({**base, "delta": delta, "is_rope": delta == r["rope"],
                         "seeds_needed": seeds_needed(delta, sd, alpha=alpha, power=power, comparisons=m),
                         "seeds_needed_upper_sd": seeds_needed(delta, sd_hi, alpha=alpha, power=power, comparisons=m)})
    out = pd.DataFrame(rows)
    out.attrs.update(alpha=alpha, power=power)
    return out


_COMPARISON_COLUMNS = {
    "method", "reference", "family", "correction", "runs_method", "failures_method", "runs_reference",
    "failures_reference", "unpaired", "seeds", "n_pairs", "mean_a", "mean_b", "delta", "sd_diff", "rope", "ci_low",
    "ci_high", "ci_method", "n_resamples", "seed", "t", "df", "p_t", "t_ci_low", "t_ci_high", "p_tost", "wilcoxon_W",
    "p_wilcoxon", "wilcoxon_note", "hedges_g", "g_ci_low", "g_ci_high", "ps", "ps_ci_low", "ps_ci_high", "d_z",
    "g_ci_method", "ps_ci_method",
    "p_adj", "p_tost_adj", "family_size", "verdict", "reason", "alpha"}


# ====================================================================== per cell, for the tracker
def cell_summaries(frame: pd.DataFrame, control: str = "bp", rope: float | Mapping[str, float] | None = None, *,
                   metric: str = METRIC, factors: Sequence[str] | None = None, alpha: float = ALPHA,
                   confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, rng: int = SEED
                   ) -> dict[str, dict[str, Any]]:
    """cell_id -> {n, mean, sd, median, ci_low, ci_high, failures, missing, delta, delta_ci_low,
    delta_ci_high, p_adj, verdict, reason, control, rope} for logging on each cell's parent run.
    Verdicts are those of ``compare`` (each method vs ``control``, Holm over the whole table); the
    control's own cells get verdict 'control'."""
    df, factors = prepare(frame, factors, metric)
    cells = cell_table(df, metric, ["cell_id"] + list(factors), confidence=confidence, n_resamples=n_resamples,
                       rng=rng)
    comp = compare(df, metric, control=control, factors=factors, rope=rope, alpha=alpha, confidence=confidence,
                   n_resamples=n_resamples, rng=rng)
    strata_cols = [f for f in factors if f != "method"]
    records = comp.to_dict("records") if len(comp) else []
    out: dict[str, dict[str, Any]] = {}
    for c in cells.to_dict("records"):
        s = {k: c[k] for k in ("n", "mean", "sd", "median", "ci_low", "ci_high", "failures", "missing", "runs")}
        s.update(metric=metric, control=control, rope=resolve_rope(rope, c.get("dataset")),
                 n_resamples=n_resamples, seed=rng)
        hits = [r for r in records if r["method"] == c["method"] and r["reference"] == control
                and all(c[k] == NA or r[k] == c[k] for k in strata_cols)]
        if c["method"] == control:
            s.update(verdict="control", delta=0.0)
        elif len(hits) == 1:
            r = hits[0]
            s.update(delta=r["delta"], delta_ci_low=r["ci_low"], delta_ci_high=r["ci_high"], n_pairs=r["n_pairs"],
                     p_adj=r["p_adj"], verdict=r["verdict"], reason=r["reason"])
        elif hits:
            s.update(delta=math.nan, verdict=f"{len(hits)} comparisons (see the report)",
                     reason="; ".join(sorted({r["verdict"] for r in hits})))
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
    return (0, v, "") if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else (1, 0, str(v))


def _estimable(c: np.ndarray, X: np.ndarray) -> bool:
    proj = np.linalg.pinv(X) @ X
    return bool(np.allclose(c @ proj, c, atol=1e-8))


def ablation_model(frame: pd.DataFrame, metric: str, axes: Sequence[str], *, block: str | None = "seed",
                   confidence: float = CONFIDENCE) -> tuple[pd.DataFrame, dict[str, Any]]:
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
        info["note"] = (f"no residual degrees of freedom ({len(y)} runs, {rank} parameters): "
                        "more seeds are needed for the model")
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
        rows.append({"term": term, "kind": kind, "df_num": dfn, "df_denom": dfd, "F": F, "p": float(ft.pvalue),
                     "partial_eta2": F * dfn / (F * dfn + dfd) if np.isfinite(F) else math.nan, "note": ""})
    return pd.DataFrame(rows), info


def ablation_effects(frame: pd.DataFrame, metric: str, axes: Sequence[str], *, block: str = "seed",
                     confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, rng: int = SEED,
                     model: tuple[pd.DataFrame, dict] | None = None) -> pd.DataFrame:
    """Main effects (each non-reference level vs the first level of an axis, averaged over the other
    axes' level combinations) and two-way interactions (difference of differences for each pair of
    non-reference levels) in one group, each estimated two ways:

    * OLS (``ablation_model``): the contrast of the fitted cell means, its t interval and p;
    * stratified bootstrap: per stratum (the other axes' levels) the per-seed paired differences, each
      stratum weighted equally, seeds resampled within strata (percentile interval).

    Columns: term, kind, axis, level, reference, estimate_ols, ci_low_ols, ci_high_ols, p_ols, estimate,
    ci_low, ci_high, strata, pairs."""
    df = frame[ok_mask(frame, metric)]
    axes = [a for a in axes if df[a].nunique() > 1]
    terms, info = model if model is not None else ablation_model(frame, metric, axes, block=block,
                                                                 confidence=confidence)
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
        return {"estimate_ols": float(np.squeeze(t.effect)), "ci_low_ols": float(lo), "ci_high_ols": float(hi),
                "p_ols": float(np.squeeze(t.pvalue))}

    levels = {a: sorted(df[a].unique(), key=_sort_key) for a in axes}
    seeds_col = block if block in df else None

    def cell_series(sub: pd.DataFrame) -> pd.Series:
        return sub.groupby(seeds_col)[metric].mean() if seeds_col else sub[metric].reset_index(drop=True)

    for a in axes:
        others = [o for o in axes if o != a]
        ref = levels[a][0]
        for lv in levels[a][1:]:
            strata, combos = [], []
            for key, g in (df.groupby(others, sort=True) if others else [((), df)]):
                pair = pd.concat([cell_series(g[g[a] == lv]).rename("x"), cell_series(g[g[a] == ref]).rename("y")],
                                 axis=1, join="inner")
                if len(pair):
                    strata.append((pair["x"] - pair["y"]).to_numpy())
                    combos.append(dict(zip(others, _key(key))))
            est, ci = stratified_bootstrap(strata, mean_of_stratum_means, confidence=confidence,
                                           n_resamples=n_resamples, rng=gen)
            o = {}
            if design is not None and combos:
                o = ols([design.row({**c, a: lv}) for c in combos], [design.row({**c, a: ref}) for c in combos])
            rows.append({"term": a, "kind": "main", "axis": a, "level": lv, "reference": ref, **o, "estimate": est,
                         "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method, "strata": len(strata),
                         "pairs": int(sum(len(s) for s in strata))})
    for a, b in itertools.combinations(axes, 2):
        others = [o for o in axes if o not in (a, b)]
        ra, rb = levels[a][0], levels[b][0]
        for la, lb in itertools.product(levels[a][1:], levels[b][1:]):
            strata, combos = [], []
            for key, g in (df.groupby(others, sort=True) if others else [((), df)]):
                cells = [cell_series(g[(g[a] == x) & (g[b] == y)]).rename(f"c{i}")
                         for i, (x, y) in enumerate(((la, lb), (la, rb), (ra, lb), (ra, rb)))]
                q = pd.concat(cells, axis=1, join="inner")
                if len(q):
                    strata.append((q["c0"] - q["c1"] - q["c2"] + q["c3"]).to_numpy())
                    combos.append(dict(zip(others, _key(key))))
            est, ci = stratified_bootstrap(strata, mean_of_stratum_means, confidence=confidence,
                                           n_resamples=n_resamples, rng=gen)
            o = {}
            if design is not None and combos:
                plus = [design.row({**c, a: la, b: lb}) for c in combos] + [design.row({**c, a: ra, b: rb}) for c in combos]
                minus = [design.row({**c, a: la, b: rb}) for c in combos] + [design.row({**c, a: ra, b: lb}) for c in combos]
                o = {k: (2 * v if k.startswith(("estimate", "ci_")) else v) for k, v in ols(plus, minus).items()}
            rows.append({"term": f"{a}:{b}", "kind": "interaction", "axis": f"{a}:{b}", "level": f"{la} × {lb}",
                         "reference": f"{ra} × {rb}", **o, "estimate": est, "ci_low": ci.low, "ci_high": ci.high,
                         "ci_method": ci.method, "strata": len(strata), "pairs": int(sum(len(s) for s in strata))})
    out = pd.DataFrame(rows)
    if len(out) and "p_ols" in out:
        out["p_ols_bh"] = adjust_pvalues(out["p_ols"], "fdr_bh")
    return out


def marginal_means(frame: pd.DataFrame, metric: str, by: Sequence[str], axes: Sequence[str], *,
                   confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, rng: int = SEED) -> pd.DataFrame:
    """Mean of ``metric`` at each level combination of ``by`` (e.g. two axes, for an interaction plot),
    averaged with equal weight over the other axes' level combinations (the strata), with a stratified
    bootstrap CI (runs resampled within strata). Columns: by..., mean, ci_low, ci_high, n, strata."""
    df = frame[ok_mask(frame, metric)]
    others = [a for a in axes if a not in by]
    gen = make_rng(rng)
    rows = []
    for key, g in df.groupby(list(by), sort=True):
        strata = [s[metric].to_numpy() for _, s in (g.groupby(others) if others else [((), g)])]
        est, ci = stratified_bootstrap(strata, mean_of_stratum_means, confidence=confidence,
                                       n_resamples=n_resamples, rng=gen)
        rows.append({**dict(zip(by, _key(key))), "mean": est, "ci_low": ci.low, "ci_high": ci.high,
                     "n": len(g), "strata": len(strata), "ci_method": ci.method})
    return pd.DataFrame(rows)


# ====================================================================== across datasets / tasks
def task_matrix(frame: pd.DataFrame, metric: str = METRIC, *, factors: Sequence[str] | None = None,
                method_col: str = "method") -> pd.DataFrame:
    """Tasks (every level combination of the factors but the method) × methods: the mean of the usable
    runs. Tasks missing a method are dropped (Friedman needs complete blocks)."""
    df, factors = prepare(frame, factors, metric)
    tasks = [f for f in factors if f != method_col]
    df = broadcast_na(df[ok_mask(df, metric)], tasks)
    if not tasks:
        df = df.assign(task="all")
        tasks = ["task"]
    m = df.groupby(tasks + [method_col])[metric].mean().unstack(method_col)
    if len(tasks) > 1:
        m.index = [" / ".join(map(str, k)) for k in m.index]
    return m.dropna(axis=0, how="any")


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
    out: dict[str, Any] = {"k": k, "N": n, "ranks": average_ranks(matrix, higher_is_better).to_dict(),
                           "alpha": alpha, "chi2": math.nan, "p": math.nan, "F_iman_davenport": math.nan,
                           "p_iman_davenport": math.nan, "cd_nemenyi": math.nan}
    notes = []
    if k < 3 or n < 2:
        notes.append(f"the Friedman test needs ≥3 methods and ≥2 tasks (here k={k}, N={n}); "
                     "see the pairwise comparisons instead")
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
        cd = f" and the Nemenyi CD ({out['cd_nemenyi']:.2f} ranks) rarely separates methods" \
            if np.isfinite(out["cd_nemenyi"]) else ""
        notes.append(f"with only N={n} task(s) the rank tests have little power{cd}; per-task results and the "
                     "paired comparisons are the primary evidence")
    out["note"] = "; ".join(notes)
    return out


def normalized_scores(frame: pd.DataFrame, metric: str = METRIC, *, control: str = "bp",
                      factors: Sequence[str] | None = None, method_col: str = "method",
                      chance: float | Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per usable run: score = (acc − chance) / (mean control acc on the task − chance); 1 = the
    control's mean, 0 = chance. chance = 1/num_classes (from the table) unless given (a number or
    dataset -> number). Tasks without a usable control, or a control at or below chance, get NaN."""
    df, factors = prepare(frame, factors, metric)
    tasks = [f for f in factors if f != method_col]
    df = broadcast_na(df[ok_mask(df, metric)], tasks).copy()
    if isinstance(chance, Mapping):
        ch = df["dataset"].map(chance).astype(float)
    elif chance is not None:
        ch = pd.Series(float(chance), index=df.index)
    elif "num_classes" in df:
        ch = 1.0 / pd.to_numeric(df["num_classes"], errors="coerce")
    else:
        ch = pd.Series(0.0, index=df.index)
    df["chance"] = ch
    df["task"] = df[tasks].astype(str).agg(" / ".join, axis=1) if tasks else "all"
    ctrl = df[df[method_col] == control].groupby("task")[metric].mean()
    base = df["task"].map(ctrl)
    denom = base - df["chance"]
    df["score"] = np.where(denom > 0, (df[metric] - df["chance"]) / denom.where(denom > 0), np.nan)
    return df


def aggregate(frame: pd.DataFrame, metric: str = METRIC, *, control: str = "bp",
              factors: Sequence[str] | None = None, method_col: str = "method",
              chance: float | Mapping[str, float] | None = None, confidence: float = CONFIDENCE,
              n_resamples: int = N_RESAMPLES, rng: int = SEED) -> pd.DataFrame:
    """rliable-style aggregate per method over all (tasks × seeds): the IQM and mean of the normalised
    score (``normalized_scores``) with stratified-bootstrap CIs (runs resampled within tasks; tasks
    fixed, so the claim is about these tasks), and the probability of improvement over the control
    averaged over tasks (P(A > control) + ½ P(=) per task)."""
    df = normalized_scores(frame, metric, control=control, factors=factors, method_col=method_col, chance=chance)
    df = df[np.isfinite(df["score"])]
    gen = make_rng(rng)
    rows = []
    for m, g in df.groupby(method_col, sort=True):
        strata = [t["score"].to_numpy() for _, t in g.groupby("task")]
        i, ci = stratified_bootstrap(strata, pooled(iqm), confidence=confidence, n_resamples=n_resamples, rng=gen)
        mu, mci = stratified_bootstrap(strata, pooled(np.mean), confidence=confidence, n_resamples=n_resamples,
                                       rng=gen)
        pois = []
        for task, t in g.groupby("task"):
            c = df[(df["task"] == task) & (df[method_col] == control)]["score"].to_numpy()
            if len(c) and m != control:
                pois.append(float(prob_superiority(t["score"].to_numpy(), c)))
        rows.append({"method": m, "tasks": len(strata), "runs": len(g), "iqm": i, "iqm_ci_low": ci.low,
                     "iqm_ci_high": ci.high, "mean": mu, "mean_ci_low": mci.low, "mean_ci_high": mci.high,
                     "prob_improvement": float(np.mean(pois)) if pois else math.nan, "ci_method": ci.method})
    out = pd.DataFrame(rows)
    out.attrs.update(confidence=confidence, n_resamples=n_resamples, seed=rng)
    return out


# ====================================================================== learning curves and per-layer diagnostics
def unit_indices(frame: pd.DataFrame, split: str = "test") -> list[int]:
    """Unit numbers K with '<split>_acc.unitK' in any run's curves."""
    ks = set()
    prefix = f"{split}_acc.unit"
    for curves in frame.get("curves", []):
        for row in curves or []:
            ks.update(int(k[len(prefix):]) for k in row if k.startswith(prefix) and k[len(prefix):].isdigit())
    return sorted(ks)


def _key_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return _hashable(v)


def curves_long(frame: pd.DataFrame, keys: Sequence[str] | None = None, series: Sequence[str] = ("val_acc", "test_acc")
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
                rows.append({"run_id": r["run_id"], "seed": r["seed"], **{f: _key_value(r.get(f)) for f in keys},
                             "epoch": c["epoch"], "series": name, "unit": k,
                             "split": base.split("_")[0], "value": float(value)})
    return pd.DataFrame(rows)


def curve_bands(long: pd.DataFrame, by: Sequence[str], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mean, SD, n and the t interval over seeds at every epoch of each group ``by`` (+ epoch)."""
    rows = []
    for key, g in long.groupby(list(by) + ["epoch"], sort=True, dropna=False):
        v = g["value"].to_numpy(float)
        ci = t_interval(v, confidence)
        rows.append({**dict(zip(list(by) + ["epoch"], _key(key))), "mean": float(v.mean()),
                     "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan, "n": len(v),
                     "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows)


def first_reach(epochs: Sequence[float], values: Sequence[float], fraction: float = 0.9,
                reference: str = "final") -> float:
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


def layer_delays(frame: pd.DataFrame, *, split: str = "test", fraction: float = 0.9, reference: str = "final",
                 keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Per run and unit (0 = the model's own rule): the delay (``first_reach``)."""
    long = curves_long(frame, keys, series=(f"{split}_acc", f"{split}_acc.unit*"))
    if not len(long):
        return pd.DataFrame()
    keys = [c for c in long.columns if c not in ("epoch", "series", "split", "value")]
    out = long.groupby(keys, sort=True, dropna=False).apply(
        lambda g: first_reach(g["epoch"], g["value"], fraction, reference), include_groups=False)
    out = out.rename("delay").reset_index()
    out.attrs.update(split=split, fraction=fraction, reference=reference)
    return out


def summarize_by(table: pd.DataFrame, value: str, by: Sequence[str], *, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, rng: int = SEED) -> pd.DataFrame:
    """``describe`` of ``value`` per group of ``by`` (mean, SD, median, bootstrap CI, n over seeds)."""
    rows = []
    gen = make_rng(rng)
    for key, g in table.groupby(list(by), sort=True, dropna=False):
        rows.append({**dict(zip(by, _key(key))), **describe(g[value], confidence=confidence,
                                                          n_resamples=n_resamples, rng=gen)})
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
        res = stats.permutation_test((rx,), lambda a, axis=-1: _pearson_along(a, ry, axis),
                                     permutation_type="pairings", vectorized=True, n_resamples=10_000)
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


def layer_correlations_within(frame: pd.DataFrame, *, split: str = "test", methods: Sequence[str] = ("pearson", "spearman"),
                              keys: Sequence[str] | None = None) -> pd.DataFrame:
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
                rows.append({**dict(zip(keys, _key(key))), "unit": k, "method_corr": m, "r": r, "p": p,
                             "epochs": len(pair)})
    return pd.DataFrame(rows)


def layer_correlations_across(frame: pd.DataFrame, *, split: str = "test", epoch: int | str = "last",
                              methods: Sequence[str] = ("pearson", "spearman"), by: Sequence[str] | None = None,
                              confidence: float = CONFIDENCE) -> pd.DataFrame:
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
        for k in sorted(int(c.rsplit("unit", 1)[1]) for c in vals.columns
                        if c.startswith(f"{split}_acc.unit") and c.rsplit("unit", 1)[1].isdigit()):
            pair = vals[[model, f"{split}_acc.unit{k}"]].apply(pd.to_numeric, errors="coerce").dropna()
            for m in methods:
                r, p = _corr(pair.iloc[:, 1].to_numpy(float), pair.iloc[:, 0].to_numpy(float), m)
                lo, hi = correlation_ci(r, len(pair), confidence)
                rows.append({**dict(zip(by, _key(key))), "unit": k, "epoch": at, "method_corr": m, "r": r, "p": p,
                             "n": len(pair), "ci_low": lo, "ci_high": hi})
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


def budget_curves(tuning: pd.DataFrame, metric: str = "val_acc", *, factors: Sequence[str] | None = None) -> pd.DataFrame:
    """Per group of factors (a cell's method, dataset, ...): for k = 1..N trials in trial order, the best
    ``metric`` so far (failed and pruned trials count as no improvement) and the expected best of k random
    trials drawn from the completed ones. Columns: factors..., k, best_so_far, expected_max, trials,
    failures, pruned."""
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
        for k in range(1, len(vals) + 1):
            rows.append({**dict(zip(factors, _key(key))), "k": k,
                         "best_so_far": best[k - 1] if np.isfinite(best[k - 1]) else math.nan,
                         "expected_max": float(em[k - 1]) if len(em) else math.nan,
                         "trials": len(vals), "failures": int((g["status"] == "failed").sum()),
                         "pruned": int((g["status"] == "pruned").sum())})
    return pd.DataFrame(rows)
