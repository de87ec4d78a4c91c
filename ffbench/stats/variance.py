"""Sources of variance: how much of a cell's uncertainty comes from the seed, the test sample and the
hyperparameter search, per cell and per group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ffbench.core.correctness import decode_correct
from ffbench.stats.defaults import METRIC
from ffbench.stats.tables import _key, ok_mask, prepare


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
