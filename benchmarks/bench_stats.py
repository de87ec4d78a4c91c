"""Calibration of the report's statistics on simulated data with known truth.

Prints one table: coverage of the per-cell interval (t, the default, vs BCa) at 3, 5 and 10 seeds;
coverage of the ablation effect interval (OLS t, the default, vs the stratified bootstrap) on a 2×2
design with 4 seeds; the rate of false 'better'/'worse' verdicts at no true difference; the rate of
false 'equivalent' verdicts at the ROPE edge; the agreement of the seed advisor's power with
numerical integration over a grid that includes large effects, and how often its advice for Δ = ROPE
ends 'better'; skewed seeds (each seed collapses with probability 0.1): the t interval's coverage, the
false better/worse rate, and how often the one-seed flag is raised (and on normal seeds); the exact
Wilcoxon p against scipy's default on tied differences.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stats.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from ffbench import stats as S


def coverage_cell(n: int, draws: int, method: str, resamples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for x in rng.normal(0.9, 0.01, (draws, n)):
        ci = S.mean_interval(x, method, n_resamples=resamples, rng=1)
        hits += ci.low <= 0.9 <= ci.high
    return hits / draws


def coverage_ablation(draws: int, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    truth = {"A": 0.02, "B": -0.01, "A:B": 0.0}
    ols = boot = total = 0
    for _ in range(draws):
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
        for r in S.ablation_effects(df, "test_acc", ["A", "B"], n_resamples=resamples).itertuples():
            ols += r.ci_low_ols <= truth[r.term] <= r.ci_high_ols
            boot += r.ci_low_boot <= truth[r.term] <= r.ci_high_boot
            total += 1
    return ols / total, boot / total


def verdict_rates(n: int, draws: int, seed: int, rope: float = 0.005, sd: float = 0.004) -> tuple[float, float]:
    """(false better/worse at Δ = 0, false equivalent at Δ = ROPE), single-comparison families."""
    rng = np.random.default_rng(seed)
    diff = equiv = 0
    for delta in (0.0, rope):
        tt = S.paired_tests(delta + rng.normal(0, sd, (draws, 1, n)), rope)
        for i in range(draws):
            v = S.decide(np.array([n]), tt["delta"][i], tt["sd"][i], tt["p_t"][i], tt["p_equiv"][i], rope, False)[
                "verdict"
            ][0]
            if delta == 0:
                diff += v in ("better", "worse")
            else:
                equiv += v == "equivalent"
    return diff / draws, equiv / draws


def advisor_agreement() -> tuple[int, int, float]:
    grid = [
        (d, n, a)
        for d in (0.2, 0.5, 1.0, 2.0, 5.0, 16.7, 50.0)
        for n in (2, 3, 4, 6, 10, 20, 40)
        for a in (0.05, 0.005, 0.0025)
    ]
    worst, agree = 0.0, 0
    for d, n, a in grid:
        p, ref = S.power_paired(d, n, a), S.power_paired_integral(d, n, a)
        err = abs(p - ref) if np.isfinite(p) else np.inf
        worst = max(worst, err)
        agree += err < 1e-6
    return agree, len(grid), worst


def advised_better(draws: int, seed: int, rope: float = 0.005, sd: float = 0.003) -> tuple[int, float]:
    """The advisor's n for a true difference of one ROPE (one comparison, Holm's 2 hypotheses), and the
    share of simulated comparisons at that n whose verdict is 'better'."""
    n = S.seeds_needed(rope, sd, comparisons=2)
    tt = S.paired_tests(rope + np.random.default_rng(seed).normal(0, sd, (draws, 1, n)), rope)
    better = sum(
        S.decide(np.array([n]), tt["delta"][i], tt["sd"][i], tt["p_t"][i], tt["p_equiv"][i], rope, False)["verdict"][0]
        == "better"
        for i in range(draws)
    )
    return n, better / draws


def skewed(n: int, draws: int, seed: int, collapse: bool = True, rope: float = 0.005) -> tuple[float, float, float]:
    """Per-seed differences 1.1 pp ± 0.4 pp, each seed collapsing by 10 pp with probability 0.1 (true mean
    −0.01 pp): (t coverage of the true mean, false better/worse, share of comparisons with the one-seed
    flag), single-comparison families. ``collapse`` False: normal seeds (the flag's false alarms)."""
    rng = np.random.default_rng(seed)
    p = 0.1 if collapse else 0.0
    truth = 0.011 - p * 0.10
    cover = wrong = flagged = 0
    for _ in range(draws):
        d = np.where(rng.random(n) < p, -0.10 + 0.011, 0.011) + rng.normal(0, 0.004, n)
        tt = S.paired_tests(d[None, :], rope)
        res = S.decide(np.array([n]), tt["delta"], tt["sd"], tt["p_t"], tt["p_equiv"], rope, False)
        ci = S.t_interval(d)
        cover += ci.low <= truth <= ci.high
        wrong += res["verdict"][0] in ("better", "worse")
        flagged += bool(S.seed_influence(d, range(n), rope, res["decision_confidence"])["flag"])
    return cover / draws, wrong / draws, flagged / draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")
    args = ap.parse_args()
    k = 0.25 if args.quick else 1.0
    t0 = time.perf_counter()
    rows = []
    for n in (3, 5, 10):
        t = coverage_cell(n, int(4000 * k), "t", 0, 10 + n)
        bca = coverage_cell(n, int(400 * k), "BCa", 2000, 20 + n)
        rows.append((f"per-cell 95% interval, n={n}", f"t {t:.3f}", f"BCa {bca:.3f}", "0.95"))
    ols, boot = coverage_ablation(int(300 * k), 1000, 3)
    rows.append(
        ("ablation effect 95% interval, 2x2, 4 seeds", f"OLS t {ols:.3f}", f"strat. bootstrap {boot:.3f}", "0.95")
    )
    for n in (3, 5, 10):
        diff, equiv = verdict_rates(n, int(3000 * k), 30 + n)
        rows.append((f"false better/worse at delta=0, n={n}", f"{diff:.3f}", "", "<= 0.05"))
        rows.append((f"false equivalent at delta=ROPE, n={n}", f"{equiv:.3f}", "", "<= 0.05"))
    agree, total, worst = advisor_agreement()
    rows.append(("advisor power vs numerical integration", f"{agree}/{total} agree", f"max |diff| {worst:.1e}", "all"))
    n2 = S.seeds_needed(0.05, 0.003, comparisons=10)
    rows.append(
        (
            "seeds for 5 pp at SD 0.3 pp, 10 comparisons",
            f"{n2}",
            f"power at 2: {S.power_paired(0.05 / 0.003, 2, 0.005):.3f}",
            "3",
        )
    )
    n_adv, better = advised_better(int(4000 * k), 40)
    rows.append((f"verdict 'better' at the advised n={n_adv} (delta=ROPE, SD 0.3 pp)", f"{better:.3f}", "", ">= 0.8"))
    for n in (3, 5, 10):
        cov, wrong, flag = skewed(n, int(2000 * k), 50 + n)
        _, _, normal = skewed(n, int(2000 * k), 60 + n, collapse=False)
        rows.append(
            (
                f"skewed seeds, n={n}: t coverage / false better-worse",
                f"{cov:.3f} / {wrong:.3f}",
                f"one-seed flag {flag:.3f} (normal: {normal:.3f})",
                "0.95 / 0.05",
            )
        )
    d = np.array([0, -2, 0, 0, 1, 0, -1, 0, 0, 0, -1, 0, -1, 1], float)  # n = 14: 8 zeros, tied ranks
    from scipy import stats as ss

    rows.append(
        (
            "Wilcoxon p, n=14 with zeros and ties",
            f"exact {S.wilcoxon_signed_rank(d)['p']:.4f}",
            f"scipy default {ss.wilcoxon(d).pvalue:.4f}",
            "exact",
        )
    )
    w = max(len(r[0]) for r in rows)
    print(f"{'quantity':<{w}}  {'default':<16}  {'alternative':<24}  target")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:<16}  {r[2]:<24}  {r[3]}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
