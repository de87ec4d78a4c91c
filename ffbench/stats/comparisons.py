"""The comparison table (``compare``): paired values per stratum, failures as outcomes (reliability, the
worst-case score), every method against the control or every pair, each row with its verdict."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ffbench.stats.defaults import ALPHA, CONFIDENCE, METRIC, N_RESAMPLES, NA, RHO, SEED
from ffbench.stats.intervals import clopper_pearson, mcnemar_exact
from ffbench.stats.paired import paired_comparison
from ffbench.stats.tables import _key, failed_mask, ok_mask, prepare, status_counts
from ffbench.stats.verdicts import adjust_pvalues, family_decisions, resolve_rope, seed_influence


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
