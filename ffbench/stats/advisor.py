"""The seed-count advisor: power of the paired t-test and of the equivalence claim, and the seeds needed
to detect an effect or to show equivalence within the ROPE."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ffbench.stats.defaults import ALPHA, CONFIDENCE, EFFECT_MULTIPLES, MIN_PAIRS, POWER


def _u_density(df: int) -> Callable[[float], float]:
    """Density of u = s/σ for a sample SD s on ``df`` degrees of freedom (u·√df ~ chi(df))."""
    return lambda u: float(stats.chi.pdf(u * math.sqrt(df), df) * math.sqrt(df))


def _integrate_u(f: Callable[[float], float], df: int) -> float:
    """∫ f(u) p(u) du over the distribution of s/σ (numerical quadrature; the reference for the
    closed forms, and their fallback where scipy's noncentral t is not finite)."""
    from scipy import integrate

    dens = _u_density(df)
    hi = math.sqrt(stats.chi2.ppf(1 - 1e-14, df) / df)
    mode = math.sqrt(max(df - 1, 0) / df)
    val, _ = integrate.quad(lambda u: f(u) * dens(u), 0, hi, points=[mode], limit=200, epsabs=1e-12)
    return float(min(1.0, max(0.0, val)))


def power_paired_integral(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test by numerical integration over the sample SD:
    ∫ [Φ̄(c·u − d√n) + Φ(−c·u − d√n)] p(u) du, c = t_{1−α/2, n−1}."""
    if n < 2:
        return math.nan
    c, nc = stats.t.ppf(1 - alpha / 2, n - 1), abs(d) * math.sqrt(n)
    return _integrate_u(lambda u: stats.norm.sf(c * u - nc) + stats.norm.cdf(-c * u - nc), n - 1)


def power_paired(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test for standardised effect d = Δ / SD(differences)
    with n pairs, from the noncentral t: P(T > c) + P(T < −c), each tail as an upper tail (``nct.sf``;
    scipy's ``nct.cdf`` returns NaN far in the lower tail), clipped to [0, 1]; the numerical integral
    where a tail is still not finite."""
    if n < 2 or not np.isfinite(d):
        return math.nan
    df, nc = n - 1, abs(d) * math.sqrt(n)
    c = stats.t.ppf(1 - alpha / 2, df)
    with np.errstate(all="ignore"):
        up, down = float(stats.nct.sf(c, df, nc)), float(stats.nct.sf(c, df, -nc))
    if not (np.isfinite(up) and np.isfinite(down)):
        return power_paired_integral(d, n, alpha)
    return float(min(1.0, max(0.0, up + down)))


def power_equivalence(rope_sd: float, n: int, alpha: float = ALPHA, effect_sd: float = 0.0) -> float:
    """Power of the equivalence claim used by the verdicts (the two-sided 1 − α t interval of the mean
    paired difference inside ±ROPE, i.e. TOST at α/2 per side) when the true difference is
    ``effect_sd`` SDs and the ROPE half-width is ``rope_sd`` SDs (both in units of the SD of the
    differences): ∫ [Φ((r − δ)√n − c·u) − Φ((−r − δ)√n + c·u)]₊ p(u) du, c = t_{1−α/2, n−1}."""
    if n < 2 or not (np.isfinite(rope_sd) and rope_sd > 0):
        return math.nan
    c, rn = stats.t.ppf(1 - alpha / 2, n - 1), math.sqrt(n)
    hi_z, lo_z = (rope_sd - effect_sd) * rn, (-rope_sd - effect_sd) * rn
    return _integrate_u(lambda u: max(0.0, stats.norm.cdf(hi_z - c * u) - stats.norm.cdf(lo_z + c * u)), n - 1)


def _smallest_n(power_at: Callable[[int], float], power: float, max_n: int) -> int | None:
    """The smallest n ≥ MIN_PAIRS with power_at(n) ≥ power (power grows with n): doubling, then bisection."""
    lo = hi = MIN_PAIRS
    while not power_at(hi) >= power:
        lo, hi = hi + 1, hi * 2
        if hi > max_n:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def seeds_needed(
    delta: float,
    sd_diff: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
    max_n: int = 10_000,
) -> int | None:
    """The smallest number of paired seeds (never below MIN_PAIRS, what a verdict needs) for which the
    paired t-test detects a true difference ``delta`` with the given ``power`` when the per-seed
    differences have SD ``sd_diff``, at level alpha / comparisons (Bonferroni, the worst case of Holm
    over that many hypotheses). SD 0 gives MIN_PAIRS. None when max_n is not enough or the input is
    undefined."""
    if not (np.isfinite(delta) and np.isfinite(sd_diff)) or delta == 0:
        return None
    if sd_diff == 0:
        return MIN_PAIRS
    d, a = abs(delta) / sd_diff, alpha / max(1, comparisons)
    return _smallest_n(lambda n: power_paired(d, n, a), power, max_n)


def seeds_needed_equivalence(
    rope: float,
    sd_diff: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
    true_delta: float = 0.0,
    max_n: int = 10_000,
) -> int | None:
    """The smallest number of paired seeds (≥ MIN_PAIRS) for which the equivalence claim
    (``power_equivalence``) holds with the given ``power`` when the true difference is ``true_delta``
    (0 by default) and the differences have SD ``sd_diff``, at level alpha / comparisons. None when
    |true_delta| ≥ rope, max_n is not enough, or the input is undefined."""
    if not (np.isfinite(rope) and np.isfinite(sd_diff)) or rope <= 0 or abs(true_delta) >= rope:
        return None
    if sd_diff == 0:
        return MIN_PAIRS
    a = alpha / max(1, comparisons)
    return _smallest_n(lambda n: power_equivalence(rope / sd_diff, n, a, true_delta / sd_diff), power, max_n)


def seed_advice(
    comparisons: pd.DataFrame,
    deltas: Sequence[float] | None = None,
    *,
    multiples: Sequence[float] = EFFECT_MULTIPLES,
    alpha: float = ALPHA,
    power: float = POWER,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """For every comparison with ≥2 pairs: the observed SD of the paired differences, its upper
    confidence bound (chi-square, one-sided at ``confidence``), and the paired seeds needed at ``power``
    (both at the observed SD and at the upper bound: a small pilot underestimates the SD about as often
    as not) for a difference claim (kind 'difference') and for the equivalence claim within the ROPE when
    the true difference is 0 (kind 'equivalence'). The level is α / (the number of hypotheses in the
    comparison's confirmatory family, 2 per comparison: Holm's worst case); exploratory comparisons use α.

    The effects advised for are those the verdict rule can call better or worse: a true difference inside
    the ROPE ends 'equivalent' as seeds grow, never 'better'. So the default effects are ``multiples`` of
    each comparison's ROPE (the ROPE itself and twice it); ``deltas``, when given, are absolute
    differences, and one smaller than the ROPE gets no seed count (``below_rope`` True)."""
    rows = []
    cols = list(comparisons.columns)
    strata = cols[: cols.index("method")] if "method" in cols else []
    for r in comparisons.to_dict("records"):
        n, sd = r["n_pairs"], r["sd_diff"]
        if n < 2 or not np.isfinite(sd):
            continue
        sd_hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1))
        fam = r.get("family_hypotheses", 2 * (r.get("family_size", 1) or 1))
        m = int(fam or 1) if r.get("family") == "confirmatory" else 1
        rope = r["rope"]
        base = {
            **{k: r[k] for k in strata},
            "method": r["method"],
            "reference": r["reference"],
            "n_pairs": n,
            "sd_diff": sd,
            "sd_diff_upper": sd_hi,
            "comparisons": m,
            "rope": rope,
        }
        targets = [rope * k for k in multiples] if deltas is None else sorted(set(deltas) | {rope})
        for delta in targets:
            below = abs(delta) < rope * (1 - 1e-9)
            rows.append(
                {
                    **base,
                    "kind": "difference",
                    "delta": delta,
                    "is_rope": math.isclose(delta, rope),
                    "below_rope": below,
                    "seeds_needed": None if below else seeds_needed(delta, sd, alpha=alpha, power=power, comparisons=m),
                    "seeds_needed_upper_sd": None
                    if below
                    else seeds_needed(delta, sd_hi, alpha=alpha, power=power, comparisons=m),
                }
            )
        rows.append(
            {
                **base,
                "kind": "equivalence",
                "delta": rope,
                "is_rope": True,
                "below_rope": False,
                "seeds_needed": seeds_needed_equivalence(rope, sd, alpha=alpha, power=power, comparisons=m),
                "seeds_needed_upper_sd": seeds_needed_equivalence(rope, sd_hi, alpha=alpha, power=power, comparisons=m),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(alpha=alpha, power=power, multiples=tuple(multiples))
    return out
