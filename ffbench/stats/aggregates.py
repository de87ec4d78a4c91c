"""Aggregates across tasks, rliable style: normalized scores, IQM / mean / median / optimality gap with
stratified-bootstrap intervals, probability of improvement, performance profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ffbench.stats.defaults import CONFIDENCE, METRIC, N_RESAMPLES, SEED
from ffbench.stats.intervals import Interval, _seed_of, make_rng, pooled, stratified_bootstrap
from ffbench.stats.one_sample import iqm
from ffbench.stats.paired import prob_superiority
from ffbench.stats.tables import axes_of, failed_mask, ok_mask, prepare, treatments


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
