"""Calibration of ffbench.stats on simulated data with known truth (fixed generators), and the newer
statistics against reference implementations (scipy, statsmodels, baycomp when installed) or numerical
integration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from ffbench import stats as S
from ffbench.core.correctness import decode_correct, encode_correct

ALPHA = 0.05


def _frame(
    values: dict[str, np.ndarray], dataset: str = "d", status: dict[str, list] | None = None, num_classes: int = 10
) -> pd.DataFrame:
    rows = []
    for m, v in values.items():
        st = (status or {}).get(m, ["done"] * len(v))
        rows += [
            {
                "method": m,
                "dataset": dataset,
                "backbone": "mlp",
                "seed": s,
                "status": st[s],
                "test_acc": x,
                "num_classes": num_classes,
            }
            for s, x in enumerate(v)
        ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- coverage of the default intervals
@pytest.mark.parametrize("n", [3, 5, 10])
def test_default_cell_interval_covers_95_percent(n):
    rng = np.random.default_rng(100 + n)
    draws = 3000
    hits = 0
    for x in rng.normal(0.9, 0.01, (draws, n)):
        ci = S.mean_interval(x)
        hits += ci.low <= 0.9 <= ci.high
    assert ci.method == "t" and S.describe(x)["ci_method"] == "t"
    assert abs(hits / draws - 0.95) < 0.015  # binomial SE 0.004 at 3000 draws


def test_bca_is_an_option_and_undercovers_at_three_seeds():
    rng = np.random.default_rng(7)
    hits = sum(
        ci.low <= 0 <= ci.high
        for ci in (S.mean_interval(x, "BCa", n_resamples=500, rng=1) for x in rng.normal(0, 1, (300, 3)))
    )
    assert hits / 300 < 0.85  # the reason t is the default below BCA_MIN_N
    assert S.mean_interval(np.arange(40.0), "auto").method.startswith("BCa")
    assert S.mean_interval(np.arange(9.0), "auto").method == "t"
    with pytest.raises(ValueError, match="allowed values are t, BCa"):
        S.mean_interval([1.0, 2.0, 3.0], "studentised")


def test_ablation_ols_interval_covers_95_percent_on_a_2x2_design_with_4_seeds():
    rng = np.random.default_rng(5)
    truth = {"A": 0.02, "B": -0.01, "A:B": 0.0}
    hits = total = 0
    for _ in range(100):
        rows = []
        for s in range(4):
            block = rng.normal(0, 0.01)
            for a in ("a1", "a2"):
                for b in ("b1", "b2"):
                    y = 0.8 + 0.02 * (a == "a2") - 0.01 * (b == "b2") + block + rng.normal(0, 0.005)
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
        eff = S.ablation_effects(df, "test_acc", ["A", "B"], n_resamples=50)
        for r in eff.itertuples():
            hits += r.ci_low <= truth[r.term] <= r.ci_high
            total += 1
    assert (eff["ci_method"] == "OLS t (seed as block)").all()
    assert abs(hits / total - 0.95) < 0.04  # 300 intervals


# ---------------------------------------------------------------- error rates of the verdicts
def _verdicts(true_deltas, n, sd, draws, rng, rope=0.005):
    """Simulate ``draws`` families (one comparison per true delta, n seeds each); the verdicts, draws × m."""
    d = np.asarray(true_deltas)[None, :, None] + rng.normal(0, sd, (draws, len(true_deltas), n))
    tt = S.paired_tests(d, rope)
    out = []
    for i in range(draws):
        res = S.decide(
            np.full(len(true_deltas), n),
            tt["delta"][i],
            tt["sd"][i],
            tt["p_t"][i],
            tt["p_equiv"][i],
            rope,
            False,
            alpha=ALPHA,
        )
        assert res["family_size"] == len(true_deltas) and res["family_hypotheses"] == 2 * len(true_deltas)
        out.append(res["verdict"])
    return np.array(out)


def test_paired_tests_match_scipy():
    rng = np.random.default_rng(0)
    d = rng.normal(0.002, 0.004, (4, 6))
    tt = S.paired_tests(d, 0.005)
    for i, row in enumerate(d):
        assert tt["p_t"][i] == pytest.approx(ss.ttest_1samp(row, 0).pvalue)
        tost = max(
            ss.ttest_1samp(row, -0.005, alternative="greater").pvalue,
            ss.ttest_1samp(row, 0.005, alternative="less").pvalue,
        )
        assert tt["p_tost"][i] == pytest.approx(tost) and tt["p_equiv"][i] == pytest.approx(min(1, 2 * tost))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_better_or_worse_at_no_difference_errs_at_most_alpha(n):
    v = _verdicts([0.0], n, 0.004, 3000, np.random.default_rng(200 + n))
    assert np.isin(v, ["better", "worse"]).mean() <= ALPHA + 0.01  # binomial SE 0.004


def test_difference_and_equivalence_claims_share_one_familywise_error():
    """Three comparisons: one at no difference (a 'better'/'worse' claim is an error) and two exactly at
    the ROPE edge (an 'equivalent' claim is an error): the chance of any false claim stays ≤ α."""
    rope = 0.005
    v = _verdicts([0.0, rope, -rope], 5, 0.004, 3000, np.random.default_rng(9), rope)
    wrong = np.isin(v[:, 0], ["better", "worse"]) | (v[:, 1] == "equivalent") | (v[:, 2] == "equivalent")
    assert wrong.mean() <= ALPHA + 0.01
    assert (v[:, 1] == "equivalent").mean() <= ALPHA + 0.01
    # and the equivalence claim has power where it should: a true difference of 0 at n = 10
    v0 = _verdicts([0.0], 10, 0.002, 500, np.random.default_rng(10), rope)
    assert (v0[:, 0] == "equivalent").mean() > 0.8


def test_comparisons_without_a_verdict_stay_out_of_the_family():
    rng = np.random.default_rng(3)
    frame = _frame(
        {
            "bp": 0.9 + rng.normal(0, 0.01, 6),
            "a": 0.93 + rng.normal(0, 0.01, 6),
            "b": np.r_[0.9, 0.91, np.full(4, np.nan)],
        },
        status={"b": ["done", "done", "pending", "pending", "pending", "pending"]},
    )
    comp = S.compare(frame, control="bp").set_index("method")
    assert not comp.loc["b", "in_family"] and comp.loc["a", "in_family"]
    assert comp.loc["a", "family_size"] == 1 and comp.loc["a", "family_hypotheses"] == 2
    assert "at least 3" in comp.loc["b", "reason"]


def test_interval_inside_the_rope_is_never_called_better():
    """A real but tiny difference: the one decision interval lies inside the ROPE, so 'equivalent'."""
    rng = np.random.default_rng(4)
    base = 0.9 + rng.normal(0, 0.01, 10)
    comp = S.compare(_frame({"bp": base, "x": base + 0.002 + rng.normal(0, 0.0002, 10)}), control="bp").iloc[0]
    assert comp["verdict"] == "equivalent" and -comp["rope"] < comp["dec_low"] and comp["dec_high"] < comp["rope"]
    assert comp["dec_low"] > 0  # and it is a real difference, which the reason states
    assert "smaller than the ROPE" in comp["reason"]


# ---------------------------------------------------------------- failures
def test_failures_enter_the_verdict_through_the_sensitivity_analysis():
    rng = np.random.default_rng(6)
    base = 0.9 + rng.normal(0, 0.01, 10)
    x = base + rng.normal(0, 0.0005, 10)
    x[[3, 7]] = np.nan
    frame = _frame(
        {"bp": base, "x": x}, status={"x": ["done"] * 3 + ["failed"] + ["done"] * 3 + ["diverged"] + ["done"] * 2}
    )
    c = S.compare(frame, control="bp").iloc[0]
    assert c["verdict"] == "equivalent" and c["n_pairs"] == 8  # over the survivors
    assert (c["fail_method"], c["outcomes_method"], c["fail_reference"]) == (2, 10, 0)
    assert (c["fail_rate_method_low"], c["fail_rate_method_high"]) == pytest.approx(
        tuple(ss.binomtest(2, 10).proportion_ci(method="exact"))
    )
    assert c["p_fail"] == pytest.approx(0.5) and c["fail_test"] == "McNemar exact"  # 2 discordant seeds
    assert c["reliability_flag"] == ""  # two failures are no significant difference...
    assert c["sens_verdict"] != "equivalent" and not c["survives_failures"]  # ...but the verdict does not survive
    assert c["chance"] == pytest.approx(0.1)


def test_all_failed_and_nan_runs_are_failures():
    base = np.array([0.9, 0.91, 0.89, 0.92, 0.9, 0.91, 0.9, 0.93, 0.9, 0.91])
    frame = _frame({"bp": base, "x": np.full(10, np.nan)}, status={"x": ["done"] * 2 + ["failed"] * 8})
    c = S.compare(frame, control="bp").iloc[0]
    assert c["verdict"] == "insufficient evidence" and c["n_pairs"] == 0
    assert c["fail_method"] == 10 and c["failures_method"] == 10  # 'done' with NaN counts as failed
    assert c["sens_verdict"] == "worse" and not c["survives_failures"]
    assert c["p_fail"] == pytest.approx(2 * 0.5**10) and c["reliability_flag"] == "less reliable"
    counts = S.status_counts(frame[frame["method"] == "x"], "test_acc")
    assert counts == {"runs": 10, "n": 0, "failures": 10, "missing": 0}


def test_clopper_pearson_and_mcnemar_match_references():
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 3), (2, 10), (3, 3), (7, 20)):
        assert S.clopper_pearson(k, n) == pytest.approx(proportion_confint(k, n, method="beta"), abs=1e-10)
    fa = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    fb = np.array([0, 0, 1, 0, 1, 0, 0, 0], bool)
    table = [[(fa & fb).sum(), (fa & ~fb).sum()], [(~fa & fb).sum(), (~fa & ~fb).sum()]]
    assert S.mcnemar_exact(fa, fb)["p"] == pytest.approx(mcnemar(table, exact=True).pvalue)


def test_nan_input_and_all_nan_aggregate():
    r = S.paired_comparison([0.91, np.nan, 0.92, 0.93], [0.9, 0.9, np.nan, 0.9], n_resamples=200)
    assert r["n_pairs"] == 2 and r["dropped"] == 2 and np.isfinite(r["p_t"])
    assert (
        S.compare(_frame({"bp": [0.9, 0.9, 0.9], "x": [np.nan, 0.95, 0.95]}), control="bp")["verdict"].iloc[0]
        == "insufficient evidence"
    )
    frame = _frame({"bp": np.full(3, np.nan), "x": np.full(3, np.nan)})
    assert len(S.aggregate(frame, control="bp", n_resamples=100)) == 0  # no crash, nothing to aggregate


# ---------------------------------------------------------------- effect sizes
def test_paired_superiority_uses_the_pairing():
    base = np.array([0.90, 0.92, 0.94, 0.96])
    r = S.paired_comparison(base + 0.01, base, n_resamples=200)
    assert r["ps"] == 0.625 and r["ps_paired"] == 1.0  # unpaired: overlapping spreads; paired: wins every seed
    assert (r["ps_paired_ci_low"], r["ps_paired_ci_high"]) == pytest.approx(S.clopper_pearson(4, 4))


def test_bayesian_correlated_t_matches_its_closed_form_and_baycomp():
    d = np.array([0.004, 0.007, 0.001, 0.006, 0.003, 0.009])
    r = S.bayes_correlated_t(d, rope=0.002)
    post = ss.t(len(d) - 1, d.mean(), d.std(ddof=1) / math.sqrt(len(d)))
    assert r["p_worse"] == pytest.approx(post.cdf(-0.002)) and r["p_better"] == pytest.approx(post.sf(0.002))
    assert r["p_worse"] + r["p_rope"] + r["p_better"] == pytest.approx(1.0) and r["rho"] == 0
    assert math.isnan(S.bayes_correlated_t(np.full(4, 0.01))["p_rope"])  # degenerate
    baycomp = pytest.importorskip("baycomp")
    a, b = 0.9 + d, np.full(len(d), 0.9)
    # baycomp's single-run correction is ρ = 1/n (Nadeau-Bengio), on y − x
    ref = baycomp.CorrelatedTTest.probs(b, a, rope=0.002, runs=1)
    got = S.bayes_correlated_t(a - b, rope=0.002, rho=1 / len(d))
    assert (got["p_worse"], got["p_rope"], got["p_better"]) == pytest.approx(ref, abs=1e-9)


def test_bayesian_signed_rank_matches_baycomp():
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.7, 0.9, 8)
    y = x + rng.normal(0.004, 0.006, 8)
    ref = baycomp.SignedRankTest.probs(x, y, rope=0.003, nsamples=20000, random_state=1)
    got = S.bayes_signed_rank(y - x, rope=0.003, n_samples=20000, rng=1)
    assert (got["p_worse"], got["p_rope"], got["p_better"]) == pytest.approx(ref, abs=0.02)


# ---------------------------------------------------------------- advisor
@pytest.mark.parametrize("d", [0.2, 1.0, 3.0, 16.7, 50.0])
@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("alpha", [0.05, 0.0025])
def test_power_matches_numerical_integration_including_large_effects(d, n, alpha):
    p = S.power_paired(d, n, alpha)
    assert np.isfinite(p) and p == pytest.approx(S.power_paired_integral(d, n, alpha), abs=1e-6)


def test_seeds_needed_for_a_large_effect_and_for_equivalence():
    assert S.power_paired(0.05 / 0.003, 2, 0.005) == pytest.approx(0.147, abs=0.002)
    assert S.seeds_needed(0.05, 0.003, comparisons=10) == 3
    n = S.seeds_needed_equivalence(0.005, 0.003)
    assert S.power_equivalence(0.005 / 0.003, n) >= 0.8 > S.power_equivalence(0.005 / 0.003, n - 1)
    assert (
        S.seeds_needed_equivalence(0.005, 0.0) == 3
        and S.seeds_needed_equivalence(0.005, 0.003, true_delta=0.006) is None
    )


def test_equivalence_power_matches_simulation():
    rng = np.random.default_rng(8)
    n, rope, sd = 6, 1.0, 1.0
    d = rng.normal(0, sd, (20000, n))
    m, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
    h = ss.t.ppf(1 - ALPHA / 2, n - 1) * se
    sim = np.mean((m - h > -rope) & (m + h < rope))
    assert S.power_equivalence(rope / sd, n, ALPHA) == pytest.approx(sim, abs=0.01)


def test_seed_advice_has_an_equivalence_line():
    rng = np.random.default_rng(1)
    base = 0.9 + rng.normal(0, 0.01, 5)
    comp = S.compare(_frame({"bp": base, "x": base + rng.normal(0, 0.003, 5)}), control="bp", n_resamples=200)
    adv = S.seed_advice(comp)
    eq = adv[adv["kind"] == "equivalence"]
    assert len(eq) == 1 and eq["comparisons"].iloc[0] == 2  # Holm's worst case over the family's 2 claims
    assert eq["seeds_needed"].iloc[0] >= 3


# ---------------------------------------------------------------- across datasets
def _multi(datasets=6, axis=True):
    rng = np.random.default_rng(12)
    rows = []
    for i in range(datasets):
        base = rng.uniform(0.6, 0.95)
        for s in range(3):
            rows.append(
                {
                    "method": "bp",
                    "dataset": f"d{i}",
                    "backbone": "mlp",
                    "kernel": None,
                    "seed": s,
                    "status": "done",
                    "test_acc": base + rng.normal(0, 0.002),
                    "num_classes": 10,
                }
            )
            for k, shift in ((1, 0.01), (3, -0.01)) if axis else ((None, 0.01),):
                rows.append(
                    {
                        "method": "sff",
                        "dataset": f"d{i}",
                        "backbone": "mlp",
                        "kernel": k,
                        "seed": s,
                        "status": "done",
                        "test_acc": base + shift + rng.normal(0, 0.002),
                        "num_classes": 10,
                    }
                )
    return pd.DataFrame(rows)


def test_across_datasets_uses_datasets_as_blocks_and_axis_levels_as_treatments():
    parts = S.dataset_matrices(_multi())
    assert len(parts) == 1
    stratum, m = parts[0]
    assert stratum == {"backbone": "mlp"} and m.shape == (6, 3)  # N = 6 datasets, not 12 tasks
    assert sorted(m.columns) == ["bp", "sff[kernel=1]", "sff[kernel=3]"]
    ad = S.across_datasets(m, "bp").set_index("treatment")
    d = m["sff[kernel=1]"] - m["bp"]
    assert ad.loc["sff[kernel=1]", "p_wilcoxon"] == pytest.approx(ss.wilcoxon(d).pvalue)
    assert ad.loc["sff[kernel=1]", "bayes_p_better"] > 0.9 and ad.loc["sff[kernel=3]", "bayes_p_worse"] > 0.9
    agg = S.aggregate(_multi(), control="bp", n_resamples=300).set_index("method")
    assert agg.loc["bp", "runs"] == 18  # the control's runs once, not once per kernel level
    assert (
        agg.loc["sff[kernel=1]", "prob_improvement_ci_low"]
        <= agg.loc["sff[kernel=1]", "prob_improvement"]
        <= agg.loc["sff[kernel=1]", "prob_improvement_ci_high"]
    )
    prof = S.aggregate_profiles(_multi(), control="bp", n_resamples=200)
    assert set(prof["method"]) == set(agg.index) and prof["fraction"].between(0, 1).all()


def test_control_rank_tests_follow_demsar():
    m = pd.DataFrame(
        {"c": [0.9, 0.8, 0.7, 0.95, 0.6], "a": [0.85, 0.75, 0.72, 0.9, 0.5], "b": [0.8, 0.7, 0.6, 0.9, 0.55]}
    )
    out = S.control_rank_tests(m, "c").set_index("treatment")
    ranks = S.average_ranks(m)
    se = math.sqrt(3 * 4 / (6 * 5))
    assert out.loc["b", "z"] == pytest.approx((ranks["b"] - ranks["c"]) / se)
    p = 2 * ss.norm.sf(abs(out["z"]))
    np.testing.assert_allclose(
        out["p_holm"], np.minimum(1, np.maximum.accumulate(np.sort(p) * np.array([2, 1])))[np.argsort(np.argsort(p))]
    )


# ---------------------------------------------------------------- sources of variance
def test_variance_sources_separate_seeds_from_the_test_set():
    rng = np.random.default_rng(2)
    mu = rng.beta(4, 0.5, 2000)  # per-example difficulty: the test set's sampling variance
    runs = [rng.random(2000) < np.clip(mu + rng.normal(0, 0.02), 0, 1) for _ in range(5)]
    v = S.variance_sources(runs)
    assert v["n_seeds"] == 5 and v["n_test"] == 2000
    assert v["se_test"] == pytest.approx(math.sqrt(mu.var() / 2000), rel=0.15)
    assert v["se_total"] ** 2 == pytest.approx(v["se_seed"] ** 2 + v["se_test"] ** 2)
    assert v["narrow_by"] in ("more seeds", "a larger test set")
    coin = [rng.random(2000) < 0.9 for _ in range(5)]  # no example is harder than another
    assert S.variance_sources(coin)["se_test"] < 0.3 * S.variance_sources(coin)["se_test_binomial"]
    bits = encode_correct(runs[0])
    assert (decode_correct(bits, 2000) == runs[0]).all()


def test_a_run_stores_its_per_example_test_correctness():
    from ffbench.core.config import RunConfig
    from ffbench.training.train import fit

    res = fit(
        RunConfig(method="bp", dataset="digits", backbone="mlp", epochs=2, backbone_options={"widths": [32]}),
        device="cpu",
    )
    m = res.metrics
    correct = decode_correct(m["test_correct_bits"], m["n_test"])
    assert correct.mean() == pytest.approx(m["test_acc"])
    frame = pd.DataFrame(
        [{"method": "bp", "dataset": "digits", "backbone": "mlp", "seed": s, "status": "done", **m} for s in range(3)]
    )
    vt = S.variance_table(frame)
    assert len(vt) == 1 and vt["n_seeds"].iloc[0] == 3 and vt["sd_seed"].iloc[0] == 0


# ---------------------------------------------------------------- the seed advisor advises what a verdict can reach
def test_seed_advice_is_for_effects_the_verdict_can_call_better():
    rng = np.random.default_rng(5)
    base = 0.9 + rng.normal(0, 0.01, 5)
    comp = S.compare(_frame({"bp": base, "x": base + rng.normal(0, 0.003, 5)}), control="bp", n_resamples=200)
    adv = S.seed_advice(comp)
    diff = adv[adv["kind"] == "difference"]
    rope = comp["rope"].iloc[0]
    assert list(diff["delta"]) == pytest.approx([rope * k for k in S.EFFECT_MULTIPLES]) and diff["delta"].min() >= rope
    sd = comp["sd_diff"].iloc[0]
    n = int(diff["seeds_needed"].iloc[0])  # for a true difference of one ROPE
    verdicts = _verdicts([rope], n, sd, 2000, np.random.default_rng(6), rope)[:, 0]
    assert (verdicts == "better").mean() >= 0.75  # the advised power (0.8), less what falls inside the ROPE
    below = S.seed_advice(comp, deltas=[0.002])
    assert (
        below.loc[below["delta"] == 0.002, "below_rope"].all()
        and below.loc[below["delta"] == 0.002, "seeds_needed"].isna().all()
    )


def test_one_seed_flag_is_rare_on_normal_seeds_and_frequent_when_one_collapses():
    rng = np.random.default_rng(7)
    normal = np.mean([S.outlying(rng.normal(0, 1, 5))[0].any() for _ in range(2000)])
    assert normal <= 0.065  # at most α = 0.05 (Bonferroni over the seeds), plus simulation noise
    collapsed = rng.normal(0, 1, (500, 10))
    collapsed[:, 3] = -12
    assert np.mean([S.outlying(x)[0][3] for x in collapsed]) > 0.95
