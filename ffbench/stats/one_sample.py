"""One sample, one cell: the IQM, a description of a cell's values (mean, SD, interval), the per-cell
table (runs, failures, missing, interval) and the compute table (time and memory, alone or batched)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ffbench.stats.defaults import CONFIDENCE, METRIC, N_RESAMPLES, SEED
from ffbench.stats.intervals import _seed_of, mean_interval, t_interval
from ffbench.stats.tables import _key, ok_mask, prepare, status_counts


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
