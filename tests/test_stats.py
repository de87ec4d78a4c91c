"""ffbench.stats against known values: published examples, hand-computed cases, scipy / statsmodels."""

from __future__ import annotations

import ast
import importlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from ffbench import stats as S

# Student's sleep data (Cushny & Peebles 1905), R: t.test(extra ~ group, data = sleep, paired = TRUE)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


# ---------------------------------------------------------------- two samples
def test_paired_t_test_matches_the_published_sleep_example():
    r = S.paired_comparison(SLEEP_1, SLEEP_2, n_resamples=2000)
    # R: t = -4.0621, df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58
    assert r["t"] == pytest.approx(-4.0621, abs=1e-4)
    assert r["df"] == 9
    assert r["p_t"] == pytest.approx(0.002833, abs=1e-6)
    assert r["t_ci_low"] == pytest.approx(-2.4598858, abs=1e-6)
    assert r["t_ci_high"] == pytest.approx(-0.7001142, abs=1e-6)
    assert r["delta"] == pytest.approx(-1.58)
    assert r["n_pairs"] == 10 and r["wilcoxon_note"] == ""
    assert r["ci_low"] < r["delta"] < r["ci_high"] < 0  # the bootstrap CI of the paired difference


def test_hedges_g_on_a_hand_case():
    a, b = np.array([1, 2, 3, 4, 5.0]), np.array([3, 4, 5, 6, 7.0])
    # s_pooled = sqrt(2.5); d = -2 / sqrt(2.5) = -1.264911; J(8) = Γ(4) / (2 Γ(3.5)) = 0.902703
    assert S.hedges_correction(8) == pytest.approx(6 / (2 * math.gamma(3.5)), rel=1e-12)
    assert S.hedges_correction(8) == pytest.approx(1 - 3 / (4 * 8 - 1), abs=1e-3)  # the usual approximation
    assert S.hedges_g(a, b) == pytest.approx(-2 / math.sqrt(2.5) * 0.9027033, rel=1e-6)
    assert S.hedges_g(b, a) == pytest.approx(1.1418394, rel=1e-6)
    assert math.isnan(S.hedges_g(np.ones(3), np.ones(3)))  # no spread: undefined, not infinite


def test_probability_of_superiority_is_mann_whitney_u_over_n1n2():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 9).astype(float), rng.integers(0, 5, 7).astype(float)  # with ties
    u = ss.mannwhitneyu(a, b).statistic
    assert S.prob_superiority(a, b) == pytest.approx(u / (9 * 7))
    assert S.prob_superiority([1, 2], [0, 0]) == 1.0
    assert S.prob_superiority([1, 1], [1, 1]) == 0.5
    batch = S.prob_superiority(np.vstack([a[:7], b]), np.vstack([b, a[:7]]))  # vectorised along the last axis
    assert batch.shape == (2,) and batch[0] == pytest.approx(1 - batch[1])


def test_wilcoxon_floor_is_stated_below_six_pairs():
    r = S.paired_comparison([1.1, 2.2, 3.3, 4.4, 5.5], [1, 2, 3, 4, 5], n_resamples=500)
    assert r["p_wilcoxon"] == pytest.approx(2 / 32)  # the smallest exact two-sided p at n = 5
    assert "n=5 < 6" in r["wilcoxon_note"]
    r6 = S.paired_comparison(np.arange(6) + 0.5, np.zeros(6), n_resamples=500)
    assert r6["p_wilcoxon"] == pytest.approx(2 / 64) and r6["wilcoxon_note"] == ""


def test_identical_differences_are_degenerate_and_make_no_claim():
    r = S.paired_comparison([0.9, 0.8, 0.7], [0.9, 0.8, 0.7], rope=0.005, n_resamples=500)
    assert r["delta"] == 0 and r["ci_low"] == r["ci_high"] == 0 and r["ci_method"].startswith("point")
    assert r["degenerate"] and math.isnan(r["p_t"]) and math.isnan(r["p_tost"]) and math.isnan(r["bayes_p_rope"])
    # three seeds that all differ by exactly 1 pp: no p = 0 and no 'better'
    frame = _frame({"x": np.full(3, 0.01)}, np.array([0.9, 0.8, 0.85]))
    c = S.compare(frame, control="bp", n_resamples=200).iloc[0]
    assert c["verdict"] == "insufficient evidence" and c["reason"].startswith("degenerate: all 3 differences equal")
    assert not c["in_family"] and c["family_size"] == 0 and math.isnan(c["p_adj"])


# ---------------------------------------------------------------- one sample, bootstrap
def test_iqm_on_known_arrays():
    assert S.iqm(np.arange(1, 9.0)) == 4.5  # mean of 3, 4, 5, 6
    assert S.iqm(np.array([1, 2, 3, 4, 100, 5, 6, 7.0])) == 4.5  # the outlier is trimmed
    assert S.iqm(np.arange(1, 9.0).reshape(1, -1), axis=1)[0] == 4.5


def test_bootstrap_is_reproducible_under_a_fixed_seed():
    x = np.random.default_rng(0).normal(size=12)
    a = S.bootstrap_ci(x, rng=7, n_resamples=3000)
    b = S.bootstrap_ci(x, rng=7, n_resamples=3000)
    c = S.bootstrap_ci(x, rng=8, n_resamples=3000)
    assert (a.low, a.high) == (b.low, b.high) and a.method == "BCa" and a.seed == 7 and a.n_resamples == 3000
    assert (a.low, a.high) != (c.low, c.high)
    ref = ss.bootstrap((x,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(7))
    assert (a.low, a.high) == pytest.approx(tuple(ref.confidence_interval))
    g = np.random.default_rng(7)  # an explicit Generator is used as given
    assert (S.bootstrap_ci(x, rng=g, n_resamples=3000).low) == pytest.approx(a.low)
    # stratified bootstrap: reproducible, strata kept fixed
    strata = [x[:4], x[4:] + 10]
    p1, i1 = S.stratified_bootstrap(strata, S.pooled(S.iqm), rng=3, n_resamples=2000)
    p2, i2 = S.stratified_bootstrap(strata, S.pooled(S.iqm), rng=3, n_resamples=2000)
    assert p1 == p2 and (i1.low, i1.high) == (i2.low, i2.high) and i1.low <= p1 <= i1.high
    assert p1 == pytest.approx(S.iqm(np.concatenate(strata)))


def test_bootstrap_degenerate_cases():
    assert S.bootstrap_ci([0.5, 0.5, 0.5]).method.startswith("point")
    assert math.isnan(S.bootstrap_ci([0.5]).low)
    # a standardised effect with n = 3: resamples of one repeated seed are undefined and left out, stated
    ci = S.bootstrap_ci(([0.1, 0.5, 0.2], [0.3, 0.1, 0.6]), S.hedges_g, paired=True, n_resamples=2000)
    assert np.isfinite(ci.low) and np.isfinite(ci.high) and abs(ci.low) < 100


def test_cell_table_counts_failures_and_missing_runs():
    df = pd.DataFrame(
        {
            "method": ["bp"] * 5,
            "dataset": "d",
            "backbone": "mlp",
            "seed": range(5),
            "status": ["done", "done", "done", "failed", "pending"],
            "test_acc": [0.9, 0.8, 0.85, np.nan, np.nan],
        }
    )
    t = S.cell_table(df, "test_acc", n_resamples=1000)
    r = t.iloc[0]
    assert (r["runs"], r["n"], r["failures"], r["missing"]) == (5, 3, 1, 1)
    assert r["mean"] == pytest.approx(0.85) and r["sd"] == pytest.approx(0.05) and r["median"] == 0.85
    assert r["ci_low"] <= 0.85 <= r["ci_high"]


# ---------------------------------------------------------------- corrections
def test_holm_and_bh_match_statsmodels_and_hand_values():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2, 0.001])
    ok = np.isfinite(p)
    for method in ("holm", "fdr_bh"):
        got = S.adjust_pvalues(p, method)
        assert np.isnan(got[3])
        np.testing.assert_allclose(got[ok], multipletests(p[ok], method=method)[1])
    np.testing.assert_allclose(S.adjust_pvalues([0.01, 0.04, 0.03], "holm"), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(S.adjust_pvalues([0.01, 0.04, 0.03], "fdr_bh"), [0.03, 0.04, 0.04])


# ---------------------------------------------------------------- verdicts
def _frame(deltas: dict[str, np.ndarray], base: np.ndarray, dataset: str = "d") -> pd.DataFrame:
    rows = [
        {"method": "bp", "dataset": dataset, "backbone": "mlp", "seed": s, "status": "done", "test_acc": v}
        for s, v in enumerate(base)
    ]
    for m, d in deltas.items():
        rows += [
            {"method": m, "dataset": dataset, "backbone": "mlp", "seed": s, "status": "done", "test_acc": v}
            for s, v in enumerate(base + d)
        ]
    return pd.DataFrame(rows)


def test_verdicts_on_constructed_data():
    rng = np.random.default_rng(11)
    n = 10
    base = 0.9 + rng.normal(0, 0.01, n)  # seed-to-seed variation, shared (common random numbers)
    frame = _frame(
        {
            "real_up": 0.03 + rng.normal(0, 0.003, n),  # a real difference
            "real_down": -0.03 + rng.normal(0, 0.003, n),
            "same": rng.normal(0, 0.0005, n),  # equivalent within ±0.5 pp
            "tiny": 0.002 + rng.normal(0, 0.0002, n),  # significant, but inside the ROPE
            "noise": rng.normal(0, 0.02, n),
        },
        base,
    )  # pure noise
    comp = S.compare(frame, control="bp", rope=0.005, n_resamples=2000).set_index("method")
    assert comp.loc["real_up", "verdict"] == "better"
    assert comp.loc["real_down", "verdict"] == "worse"
    assert comp.loc["same", "verdict"] == "equivalent"
    assert comp.loc["tiny", "verdict"] == "equivalent" and "smaller than the ROPE" in comp.loc["tiny", "reason"]
    assert comp.loc["noise", "verdict"] == "insufficient evidence"
    # one Holm family over the difference and the equivalence claims of all five comparisons
    joint = multipletests(np.concatenate([comp["p_t"], comp["p_equiv"]]), method="holm")[1]
    np.testing.assert_allclose(comp["p_adj"], joint[:5])
    np.testing.assert_allclose(comp["p_equiv_adj"], joint[5:])
    assert set(comp["family"]) == {"confirmatory"} and (comp["family_size"] == 5).all()
    assert (comp["family_hypotheses"] == 10).all()
    # the decision interval is dual to the corrected claims: it excludes 0 / lies in the ROPE exactly then
    for r in comp.itertuples():
        assert (r.dec_low > 0 or r.dec_high < 0) == (r.p_adj < 0.05)
        assert (-r.rope < r.dec_low and r.dec_high < r.rope) == (r.p_equiv_adj < 0.05)
    assert (comp["n_pairs"] == n).all() and (comp["rope"] == 0.005).all()
    # pure noise with few seeds, and too few seeds for any verdict
    few = S.compare(_frame({"x": np.array([0.05, 0.06])}, base[:2]), control="bp", n_resamples=500)
    assert few["verdict"].iloc[0] == "insufficient evidence" and "at least 3" in few["reason"].iloc[0]


def test_verdict_rule_directly():
    assert S.verdict(10, 0.01, 0.03, 0.001, 1.0, 0.005)[0] == "better"
    assert S.verdict(10, 0.01, 0.03, 0.001, 1.0, 0.005, higher_is_better=False)[0] == "worse"
    assert S.verdict(10, -0.004, 0.004, 0.5, 0.01, 0.005)[0] == "equivalent"
    assert S.verdict(10, 0.001, 0.004, 0.01, 0.01, 0.005)[0] == "equivalent"  # both claims: inside the ROPE wins
    assert S.verdict(10, -0.004, 0.004, 0.5, 0.2, 0.005)[0] == "insufficient evidence"  # not after correction
    assert S.verdict(10, -0.01, 0.03, 0.2, 1.0, 0.005)[0] == "insufficient evidence"
    assert S.verdict(2, 0.01, 0.03, 0.001, 1.0, 0.005)[0] == "insufficient evidence"
    v, why = S.verdict(5, 0.01, 0.01, math.nan, math.nan, 0.005, degenerate=True, delta=0.01)
    assert v == "insufficient evidence" and "degenerate" in why


def test_all_pairs_are_exploratory_with_bh_and_failures_are_counted():
    rng = np.random.default_rng(2)
    base = 0.8 + rng.normal(0, 0.01, 6)
    frame = _frame({"a": 0.02 + rng.normal(0, 0.004, 6), "b": rng.normal(0, 0.004, 6)}, base)
    frame.loc[(frame["method"] == "a") & (frame["seed"] == 5), ["status", "test_acc"]] = ["failed", np.nan]
    comp = S.compare(frame, control="bp", all_pairs=True, n_resamples=1000)
    ex = comp[comp["family"] == "exploratory"]
    assert list(zip(ex["method"], ex["reference"])) == [("a", "b")]
    assert ex["correction"].iloc[0] == "fdr_bh"
    a = comp[(comp["method"] == "a") & (comp["reference"] == "bp")].iloc[0]
    assert (a["n_pairs"], a["failures_method"], a["runs_method"], a["unpaired"]) == (5, 1, 6, 1)


def test_an_axis_that_does_not_apply_to_the_control_pairs_with_every_level():
    base = np.array([0.9, 0.91, 0.89, 0.92])
    rows = [
        {"method": "bp", "dataset": "d", "backbone": "mlp", "kernel": None, "seed": s, "status": "done", "test_acc": v}
        for s, v in enumerate(base)
    ]
    for k, shift in ((1, 0.02), (3, -0.02)):
        rows += [
            {
                "method": "sff",
                "dataset": "d",
                "backbone": "mlp",
                "kernel": k,
                "seed": s,
                "status": "done",
                "test_acc": v + shift,
            }
            for s, v in enumerate(base)
        ]
    comp = S.compare(pd.DataFrame(rows), control="bp", n_resamples=500)
    assert sorted(comp["kernel"]) == [1, 3]
    assert comp.set_index("kernel")["delta"].to_dict() == pytest.approx({1: 0.02, 3: -0.02})


def test_cell_summaries_for_the_tracker():
    rng = np.random.default_rng(5)
    base = 0.9 + rng.normal(0, 0.01, 6)
    frame = _frame({"up": 0.03 + rng.normal(0, 0.002, 6)}, base)
    frame["cell_id"] = frame["method"].map({"bp": "c-bp", "up": "c-up"})
    out = S.cell_summaries(frame, control="bp", n_resamples=1000)
    assert set(out) == {"c-bp", "c-up"}
    assert out["c-bp"]["verdict"] == "control" and out["c-up"]["verdict"] == "better"
    assert out["c-up"]["delta"] == pytest.approx(float(np.mean(frame[frame.method == "up"].test_acc.values - base)))
    for k in ("n", "mean", "sd", "ci_low", "ci_high", "failures", "delta", "rope", "n_resamples", "seed"):
        assert k in out["c-up"]
    p = [out["c-up"][k] for k in ("p_worse", "p_rope", "p_better")]  # the Bayesian verdict, for the parent run
    assert sum(p) == pytest.approx(1.0) and p[2] > 0.99  # +3 pp at SD 0.2 pp over 6 seeds


# ---------------------------------------------------------------- seed advisor
@pytest.mark.parametrize("d,n", [(0.5, 34), (0.8, 15), (1.0, 10), (1.5, 6), (2.0, 5), (3.0, 4)])
def test_seeds_needed_matches_the_noncentral_t_table(d, n):
    assert S.seeds_needed(d, 1.0) == n  # harness-notes §3.2 (α = 0.05 two-sided, power 0.8, paired)


def test_seeds_needed_worked_examples():
    assert S.seeds_needed(0.5, 1.0, comparisons=10) == 58  # Holm over ~10 comparisons (worst case α/10)
    assert S.seeds_needed(0.005, 0.003) == 6  # 0.5 pp at SD 0.3 pp
    assert S.seeds_needed(0.005, 0.003, comparisons=5) == 8
    assert S.seeds_needed(0.0, 1.0) is None and S.seeds_needed(1.0, 0.0) == 3  # a verdict needs 3 pairs
    assert S.seeds_needed(0.05, 0.003, comparisons=10) == 3  # 5 pp at SD 0.3 pp: 2 seeds have 15% power
    assert S.power_paired(1.0, 10) >= 0.8 > S.power_paired(1.0, 9)


# ---------------------------------------------------------------- across datasets
def test_nemenyi_cd_matches_demsar():
    for k, n, cd in ((5, 5, 2.73), (5, 10, 1.93), (5, 20, 1.36), (8, 5, 4.70), (8, 10, 3.32), (8, 20, 2.35)):
        assert S.nemenyi_cd(k, n) == pytest.approx(cd, abs=0.006)


def test_friedman_and_average_ranks():
    m = pd.DataFrame(
        {"a": [0.9, 0.8, 0.7, 0.95], "b": [0.85, 0.75, 0.72, 0.9], "c": [0.8, 0.7, 0.6, 0.9]},
        index=["t1", "t2", "t3", "t4"],
    )
    ranks = S.average_ranks(m)
    assert ranks.to_dict() == {"a": 1.25, "b": 1.875, "c": 2.875}
    fr = S.friedman(m)
    ref = ss.friedmanchisquare(m["a"], m["b"], m["c"])
    assert fr["chi2"] == pytest.approx(ref.statistic) and fr["p"] == pytest.approx(ref.pvalue)
    assert fr["k"] == 3 and fr["N"] == 4 and "little power" in fr["note"]
    assert "needs" in S.friedman(m[["a", "b"]])["note"]


def test_aggregate_normalised_iqm():
    rows = []
    for task, nc in (("d1", 10), ("d2", 2)):
        for s in range(4):
            rows.append(
                {
                    "method": "bp",
                    "dataset": task,
                    "backbone": "m",
                    "seed": s,
                    "status": "done",
                    "num_classes": nc,
                    "test_acc": 0.9,
                }
            )
            rows.append(
                {
                    "method": "x",
                    "dataset": task,
                    "backbone": "m",
                    "seed": s,
                    "status": "done",
                    "num_classes": nc,
                    "test_acc": 0.9 - 0.01 * s,
                }
            )
    agg = S.aggregate(pd.DataFrame(rows), control="bp", n_resamples=1000).set_index("method")
    assert agg.loc["bp", "iqm"] == pytest.approx(1.0)
    scores = np.concatenate([(0.9 - 0.01 * np.arange(4) - 0.1) / 0.8, (0.9 - 0.01 * np.arange(4) - 0.5) / 0.4])
    assert agg.loc["x", "iqm"] == pytest.approx(S.iqm(scores))
    assert agg.loc["x", "prob_improvement"] == pytest.approx(1 / 8)  # only the tie at seed 0 counts half
    assert agg.loc["x", "iqm_ci_low"] <= agg.loc["x", "iqm"] <= agg.loc["x", "iqm_ci_high"]


# ---------------------------------------------------------------- factorial ablation
def test_ablation_effects_recover_known_main_effects_and_interaction():
    rng = np.random.default_rng(4)
    rows = []
    for s in range(8):
        seed_effect = rng.normal(0, 0.01)
        for a in ("a1", "a2"):
            for b in ("b1", "b2"):
                y = (
                    0.8
                    + 0.05 * (a == "a2")
                    + 0.02 * (b == "b2")
                    + 0.03 * (a == "a2" and b == "b2")
                    + seed_effect
                    + rng.normal(0, 0.001)
                )
                rows.append(
                    {
                        "method": "m",
                        "dataset": "d",
                        "backbone": "x",
                        "A": a,
                        "B": b,
                        "seed": s,
                        "status": "done",
                        "test_acc": y,
                    }
                )
    df, _ = S.prepare(pd.DataFrame(rows), metric="test_acc")
    terms, info = S.ablation_model(df, "test_acc", ["A", "B"])
    assert set(terms["term"]) == {"A", "B", "A:B", "seed"} and info["df_resid"] == 32 - 1 - 3 - 7
    assert (terms.set_index("term").loc[["A", "B", "A:B"], "p"] < 1e-6).all()
    eff = S.ablation_effects(df, "test_acc", ["A", "B"], n_resamples=1000, model=(terms, info)).set_index("term")
    # main effect of A averaged over B: 0.05 + 0.03 / 2; of B: 0.02 + 0.03 / 2; interaction: 0.03
    for term, want in (("A", 0.065), ("B", 0.035), ("A:B", 0.03)):
        assert eff.loc[term, "estimate"] == pytest.approx(want, abs=0.002)
        assert eff.loc[term, "estimate_ols"] == pytest.approx(eff.loc[term, "estimate"], abs=1e-9)  # balanced
        assert eff.loc[term, "ci_low_ols"] < want < eff.loc[term, "ci_high_ols"]
        assert eff.loc[term, "ci_low"] < eff.loc[term, "estimate"] < eff.loc[term, "ci_high"]
    mm = S.marginal_means(df, "test_acc", ["A"], ["A", "B"], n_resamples=500).set_index("A")
    assert mm.loc["a2", "mean"] - mm.loc["a1", "mean"] == pytest.approx(eff.loc["A", "estimate"])


# ---------------------------------------------------------------- per layer and curves
def _curve_frame() -> pd.DataFrame:
    rows = []
    for s in range(4):
        curves = []
        for e in range(1, 7):
            u1 = min(0.9, 0.3 + 0.2 * e) + 0.01 * s  # fast
            u2 = 0.1 + 0.12 * e + 0.005 * s  # slow, still rising
            curves.append(
                {"epoch": e, "val_acc": u2, "test_acc": u2 + 0.01, "test_acc.unit1": u1, "test_acc.unit2": u2 + 0.01}
            )
        rows.append(
            {
                "run_id": f"r{s}",
                "method": "ff",
                "dataset": "d",
                "backbone": "mlp",
                "seed": s,
                "status": "done",
                "curves": curves,
                "test_acc": curves[-1]["test_acc"],
            }
        )
    return pd.DataFrame(rows)


def test_first_reach_and_layer_delays():
    assert S.first_reach([1, 2, 3, 4], [0.2, 0.5, 0.8, 0.9], 0.9) == 4  # target 0.81: 0.8 falls short
    assert S.first_reach([1, 2, 3, 4], [0.2, 0.5, 0.8, 0.9], 0.85) == 3
    assert S.first_reach([1, 2, 3], [0.5, 0.9, 0.6], 0.9, reference="max") == 2
    d = S.layer_delays(_curve_frame(), fraction=0.9)
    by_unit = d.groupby("unit")["delay"].mean()
    assert by_unit[1] < by_unit[2]  # the deeper unit is delayed
    assert by_unit[1] == 3 and by_unit[2] == 6


def test_layer_model_correlations():
    f = _curve_frame()
    w = S.layer_correlations_within(f)
    assert set(w["method_corr"]) == {"pearson", "spearman"} and (w["epochs"] == 6).all()
    u2 = w[(w["unit"] == 2) & (w["method_corr"] == "pearson")]
    assert np.allclose(u2["r"], 1.0)  # unit 2 is the model's curve shifted
    fz = S.fisher_z_mean([0.5, 0.5, 0.5])
    assert fz["r_mean"] == pytest.approx(0.5) and fz["runs"] == 3
    fz2 = S.fisher_z_mean([0.2, 0.6])
    assert fz2["r_mean"] == pytest.approx(math.tanh((math.atanh(0.2) + math.atanh(0.6)) / 2))
    a = S.layer_correlations_across(f, epoch=6)
    row = a[(a["unit"] == 1) & (a["method_corr"] == "pearson")].iloc[0]
    x = [c[-1]["test_acc.unit1"] for c in f["curves"]]
    y = [c[-1]["test_acc"] for c in f["curves"]]
    ref = ss.pearsonr(x, y)
    assert row["n"] == 4 and row["r"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    bands = S.curve_bands(S.curves_long(f, series=("test_acc",)), ["method"])
    assert list(bands["epoch"]) == list(range(1, 7)) and (bands["n"] == 4).all()


def test_spearman_p_is_exact_for_few_epochs():
    assert S._corr(np.arange(3.0), np.arange(3.0), "spearman") == pytest.approx((1.0, 1 / 3))  # 2 of 6 orderings
    rho, p = S._corr(np.arange(5.0), np.array([2, 1, 4, 3, 5.0]), "spearman")
    assert rho == pytest.approx(0.8) and p == pytest.approx(16 / 120)  # exact two-sided, n = 5
    x, y = np.arange(12.0), np.array([1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10.0])
    assert S._corr(x, y, "spearman")[1] == pytest.approx(ss.spearmanr(x, y).pvalue)  # larger n: scipy's


def test_expected_max_and_budget_curves():
    np.testing.assert_allclose(S.expected_max([0.1, 0.5, 0.3]), [0.3, 3.5 / 9, 0.1 / 27 + 0.3 * 7 / 27 + 0.5 * 19 / 27])
    tun = pd.DataFrame(
        {
            "method": "bp",
            "dataset": "d",
            "backbone": "m",
            "seed": 0,
            "trial": [2, 0, 1, 3],
            "status": ["done", "done", "failed", "done"],
            "val_acc": [0.7, 0.5, np.nan, 0.6],
        }
    )
    b = S.budget_curves(tun)
    assert list(b["best_so_far"]) == [0.5, 0.5, 0.7, 0.7] and (b["failures"] == 1).all()
    assert b["expected_max"].iloc[0] == pytest.approx(0.6)


# ---------------------------------------------------------------- Wilcoxon signed-rank: exact with ties and zeros
def _enumerated_wilcoxon_p(d) -> float:
    """Brute force: every sign assignment of the nonzero differences' mid-ranks, equally likely."""
    import itertools

    nz = np.asarray(d, float)[np.asarray(d) != 0]
    r = ss.rankdata(np.abs(nz))
    e, w = r.sum() / 2, r[nz > 0].sum()
    hits = [abs(np.dot(r, s) - e) >= abs(w - e) - 1e-9 for s in itertools.product([0, 1], repeat=len(nz))]
    return float(np.mean(hits))


@pytest.mark.parametrize("n", [6, 15, 30, 60])
def test_wilcoxon_matches_scipy_exact_without_ties(n):
    d = np.random.default_rng(n).normal(0.3, 1, n)
    got, ref = S.wilcoxon_signed_rank(d), ss.wilcoxon(d, method="exact")
    assert got["method"] == "exact" and got["W"] == ref.statistic
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    "d",
    [
        [0, -2, 0, 0, 1, 0, -1, 0, 0, 0, -1, 0, -1, 1],  # n = 14, 8 zeros, tied ranks
        [0, 0, 1, 1, 1, 2, 2, -1, 3, 3, -2, 1, 2, 0, 4, -1, 2, 1],
        [1, 1, 1, -1, 2, 2, -2, 3],
    ],
)
def test_wilcoxon_with_ties_and_zeros_equals_enumeration(d):
    d = np.asarray(d, float) / 1000
    got = S.wilcoxon_signed_rank(d)
    assert got["method"] == "exact" and got["zeros"] == int((d == 0).sum())
    assert got["p"] == pytest.approx(_enumerated_wilcoxon_p(d), abs=1e-12)
    r = S.paired_comparison(d + 0.9, np.full(len(d), 0.9), n_resamples=200)  # what the comparisons report
    assert r["p_wilcoxon"] == pytest.approx(got["p"], abs=1e-9) and r["wilcoxon_method"] == "exact"


def test_wilcoxon_beyond_the_exact_limit_is_a_seeded_monte_carlo():
    d = np.random.default_rng(4).integers(-3, 5, 16).astype(float)  # ties and zeros
    exact = S.wilcoxon_signed_rank(d)["p"]
    mc = S.wilcoxon_signed_rank(d, exact_max_n=10, n_draws=50_000, rng=3)
    assert mc["method"] == "Monte Carlo (50000 sign flips, seed 3)"
    assert mc["p"] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 50_000) + 1e-4)
    assert S.wilcoxon_signed_rank(d, exact_max_n=10, n_draws=50_000, rng=3)["p"] == mc["p"]  # reproducible
    assert math.isnan(S.wilcoxon_signed_rank(np.zeros(5))["p"])


# ---------------------------------------------------------------- direction: a loss, lower is better
def _acc_with_a_failure() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    base = 0.9 + rng.normal(0, 0.01, 6)
    rows = [
        {"method": m, "dataset": "d", "backbone": "mlp", "seed": s, "status": "done", "test_acc": v, "num_classes": 10}
        for m, vals in (("bp", base), ("x", base + 0.008 + rng.normal(0, 0.004, 6)))
        for s, v in enumerate(vals)
    ]
    rows[-1]["status"] = "failed"  # x's seed 5
    return pd.DataFrame(rows)


def test_every_directional_quantity_follows_higher_is_better():
    acc = _acc_with_a_failure()
    loss = acc.assign(test_acc=-acc["test_acc"])  # the same data as a loss: lower is better
    a = S.compare(acc, n_resamples=500, chance=0.1).iloc[0]
    b = S.compare(loss, n_resamples=500, chance=-0.1, higher_is_better=False).iloc[0]
    for k in (
        "verdict",
        "bayes_p_worse",
        "bayes_p_rope",
        "bayes_p_better",
        "ps_paired",
        "ps_paired_ci_low",
        "ps_paired_ci_high",
        "ps",
        "sens_verdict",
        "survives_failures",
        "p_t",
        "p_wilcoxon",
        "one_seed",
    ):
        assert a[k] == pytest.approx(b[k], abs=1e-12) if isinstance(a[k], float) else a[k] == b[k], k
    assert a["bayes_p_better"] > 0.5 and a["ps_paired"] > 0.5  # x is better on accuracy, and on the loss
    for k in ("delta", "sens_delta", "hedges_g"):  # signed differences, method − reference, in the metric's units
        assert b[k] == pytest.approx(-a[k])
    assert (b["dec_low"], b["dec_high"]) == pytest.approx((-a["dec_high"], -a["dec_low"]))


def test_a_failed_run_of_a_loss_scores_the_stratum_s_worst_value():
    acc = _acc_with_a_failure()
    loss = acc.assign(test_acc=1 - acc["test_acc"])  # an error rate, chance level not given
    r = S.compare(loss, n_resamples=200, higher_is_better=False).iloc[0]
    done = loss[loss["status"] == "done"]["test_acc"]
    assert r["chance"] == pytest.approx(done.max())  # not accuracy's 1/classes, which reads as a good loss
    assert S.failure_score(loss, "test_acc", 0.9, higher_is_better=False) == 0.9  # a given level wins
    assert S.failure_score(acc, "test_acc") == pytest.approx(0.1)  # accuracy: chance, 1/classes


# ---------------------------------------------------------------- a verdict that one seed decides
def test_outlying_is_the_leave_one_out_residual_test():
    x = np.array([0.010, 0.012, 0.009, 0.011, 0.013, 0.010, 0.012, 0.011, 0.010, -0.08])
    mask, p = S.outlying(x)
    others = x[:-1]
    t = (x[-1] - others.mean()) / (others.std(ddof=1) * math.sqrt(1 + 1 / 9))
    assert p[-1] == pytest.approx(2 * ss.t.sf(abs(t), 8)) and mask.tolist() == [False] * 9 + [True]
    assert not S.outlying(x[:-1])[0].any() and not S.outlying(x[:2])[0].any()


def test_a_collapsed_seed_is_flagged_beside_the_verdict():
    from ffbench.analysis.report_context import verdict_label

    rng = np.random.default_rng(2)
    base = 0.9 + rng.normal(0, 0.01, 10)
    d = 0.01 + rng.normal(0, 0.002, 10)
    d[7] = -0.09  # seed 7 collapses
    frame = _frame({"x": d}, base)
    r = S.compare(frame, n_resamples=200).iloc[0]
    assert r["outlying_seeds"] == "7" and r["one_seed"].startswith("seed 7 outlying")
    assert "without it: better" in r["one_seed"] and r["one_seed"] in verdict_label(r)
    cells = S.cell_summaries(frame.assign(cell_id=frame["method"]))
    assert cells["x"]["one_seed"] == r["one_seed"]
    clean = S.compare(_frame({"x": 0.01 + rng.normal(0, 0.002, 10)}, base), n_resamples=200).iloc[0]
    assert clean["one_seed"] == "" and clean["verdict"] == "better"


def test_the_end_of_run_table_shows_the_flag_beside_the_verdict():
    from ffbench.execution import results

    row = dict(
        dataset="digits",
        backbone="mlp",
        method="x",
        n=10,
        failed=0,
        test_acc_mean=91.0,
        test_acc_sd=3.0,
        test_acc_ci_low=89.0,
        test_acc_ci_high=93.0,
        delta_vs_control=-0.2,
        delta_ci_low_vs_control=-2.0,
        delta_ci_high_vs_control=1.6,
        verdict="insufficient evidence",
        one_seed="seed 7 outlying (p 2e-09 < 0.05/10), without it: better",
        executed="alone",
        epoch_time_s=0.5,
        saved_MB_per_step=1.0,
        no_backward=False,
    )
    line = next(ln for ln in results.format_table(pd.DataFrame([row])).splitlines() if ln.startswith("| digits"))
    assert "| insufficient evidence (seed 7 outlying (p 2e-09 < 0.05/10), without it: better) |" in line


# ---------------------------------------------------------------- the package: modules and names
def test_every_public_name_of_the_stats_modules_is_a_name_of_the_package():
    public: set[str] = set()
    for path in sorted(Path(S.__file__).parent.glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = importlib.import_module(f"ffbench.stats.{path.stem}")
        for node in ast.parse(path.read_text()).body:
            names = [node.name] if isinstance(node, ast.FunctionDef | ast.ClassDef) else []
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in (n for n in names if not n.startswith("_")):
                assert getattr(S, name) is getattr(module, name), f"ffbench.stats.{name} is not {path.stem}.{name}"
                public.add(name)
    assert set(S.__all__) == public
    order = list(S._NAMES)  # the package docstring's order: a module imports only from those before it
    for path in Path(S.__file__).parent.glob("[!_]*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ffbench.stats"):
                source = node.module.removeprefix("ffbench.stats").lstrip(".")
                assert source in order and order.index(source) < order.index(path.stem), (path.name, node.module)
    assert S._corr is importlib.import_module("ffbench.stats.curves")._corr  # the tests use it
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        S.no_such_name  # noqa: B018


def test_importing_the_package_loads_a_module_only_when_a_name_of_it_is_used():
    # the command line reads the defaults and exports label treatments: neither needs scipy
    probe = (
        "import sys\n"
        "from ffbench import stats\n"
        "print(stats.ROPE, 'scipy' in sys.modules, 'pandas' in sys.modules)\n"
        "stats.treatments\n"
        "print('scipy' in sys.modules, 'pandas' in sys.modules)\n"
        "stats.compare\n"
        "print('scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.005", "False", "False", "False", "True", "True"]
