"""Learning curves, per-layer diagnostics and tuning budgets: curves per epoch with bands, first reach and
layer delays, correlations between units and the model, the expected best of k trials."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ffbench.stats.defaults import CONFIDENCE, N_RESAMPLES, SEED
from ffbench.stats.intervals import make_rng, t_interval
from ffbench.stats.one_sample import describe
from ffbench.stats.tables import _hashable, _key, infer_factors, ok_mask, prepare


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
