"""Per-cell summaries for the tracker: each cell's interval and, against the control, its difference and
verdict, keyed by cell id."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ffbench.stats.comparisons import compare
from ffbench.stats.defaults import ALPHA, CONFIDENCE, METRIC, N_RESAMPLES, NA, SEED
from ffbench.stats.one_sample import cell_table
from ffbench.stats.tables import prepare
from ffbench.stats.verdicts import resolve_rope


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
