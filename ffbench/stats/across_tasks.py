"""Across datasets and tasks: per-dataset matrices of treatments, average ranks, Friedman and Nemenyi,
Wilcoxon and Bayesian signed-rank tests of each treatment against the control."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ffbench.stats.defaults import ALPHA, METRIC, ROPE, SEED, WILCOXON_FLOOR
from ffbench.stats.intervals import _seed_of, make_rng, wilcoxon_signed_rank
from ffbench.stats.tables import _key, axes_of, ok_mask, prepare, treatments
from ffbench.stats.verdicts import adjust_pvalues


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
