"""The statistics of an experiment, from sufficient statistics only (counts, sums): pure
functions, no I/O, deterministic (no random sampling anywhere).

    wilson_interval          one arm's rate
    difference_interval      p1 - p2: Newcombe's hybrid score interval (default) or Wald
    ratio_interval           p1 / p2: the log (Katz) method
    two_proportion_ztest     pooled z-test, as statsmodels `proportions_ztest`
    welch_ttest              means with unequal variances, as scipy `ttest_ind_from_stats`
    probability_to_beat      Beta-Binomial P(p_b > p_a): closed form, quadrature beyond it
    msprt / sequential_test  always-valid p-values and confidence sequences (Johari et al.)
    sample_ratio_mismatch    chi-square of the arms' sizes against the configured split
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special, stats  # type: ignore[import-untyped]  # scipy ships no types

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def scaled(self, factor: float) -> Interval:
        ends = sorted((self.low * factor, self.high * factor))
        return Interval(ends[0], ends[1])


@dataclass(frozen=True, slots=True)
class TestResult:
    statistic: float
    p_value: float


@dataclass(frozen=True, slots=True)
class WelchResult:
    statistic: float
    df: float
    p_value: float
    difference: float  # mean1 - mean2
    interval: Interval


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def wilson_interval(successes: int, n: int, *, alpha: float = 0.05) -> Interval:
    """Wilson's score interval for a proportion (statsmodels `proportion_confint`, wilson)."""
    if n <= 0:
        return Interval(0.0, 1.0)
    z = _z(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(
    x1: int, n1: int, x2: int, n2: int, *, alpha: float = 0.05, method: str = "newcombe"
) -> Interval:
    """Interval for p1 - p2. Newcombe's hybrid score (his method 10, from the two Wilson
    intervals) keeps its coverage at small counts and rates near 0, where Wald's does not;
    `method="wald"` is the textbook unpooled interval."""
    p1, p2 = x1 / n1, x2 / n2
    difference = p1 - p2
    if method == "wald":
        half = _z(alpha) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        return Interval(difference - half, difference + half)
    if method != "newcombe":
        raise ValueError(f"method: 'newcombe' or 'wald', not {method!r}")
    first, second = wilson_interval(x1, n1, alpha=alpha), wilson_interval(x2, n2, alpha=alpha)
    low = difference - math.hypot(p1 - first.low, second.high - p2)
    high = difference + math.hypot(first.high - p1, p2 - second.low)
    return Interval(low, high)


def ratio_interval(x1: int, n1: int, x2: int, n2: int, *, alpha: float = 0.05) -> Interval | None:
    """Interval for p1 / p2 by the log method (Katz et al. 1978): log(p1/p2) is near normal
    with variance 1/x1 - 1/n1 + 1/x2 - 1/n2. None without a conversion in either arm."""
    if x1 <= 0 or x2 <= 0:
        return None
    log_ratio = math.log((x1 / n1) / (x2 / n2))
    half = _z(alpha) * math.sqrt(max(0.0, 1 / x1 - 1 / n1 + 1 / x2 - 1 / n2))
    return Interval(math.exp(log_ratio - half), math.exp(log_ratio + half))


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """Pooled two-sided z-test of p1 = p2 (z has the sign of p1 - p2). Identical rates of 0
    or 1 carry no evidence: z 0, p 1."""
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return TestResult(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / se
    return TestResult(z, float(2 * stats.norm.sf(abs(z))))


def sample_variance(n: int, total: float, total_squares: float) -> float:
    """The unbiased variance of n values from their sum and sum of squares."""
    if n < 2:
        return 0.0
    return max(0.0, (total_squares - total * total / n) / (n - 1))


def welch_ttest(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float, *, alpha: float = 0.05
) -> WelchResult:
    """Welch's t-test of mean1 = mean2 from (n, mean, sample variance), with the interval of
    mean1 - mean2 on the Welch-Satterthwaite degrees of freedom."""
    difference = mean1 - mean2
    if n1 < 2 or n2 < 2:  # no variance to estimate: no evidence either way
        return WelchResult(0.0, 0.0, 1.0, difference, Interval(-math.inf, math.inf))
    a, b = var1 / n1, var2 / n2
    se = math.sqrt(a + b)
    if se == 0:
        return WelchResult(
            0.0, float(n1 + n2 - 2), 1.0, difference, Interval(difference, difference)
        )
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t = difference / se
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return WelchResult(
        t,
        df,
        float(2 * stats.t.sf(abs(t), df)),
        difference,
        Interval(difference - half, difference + half),
    )


def probability_to_beat(
    x_a: int, n_a: int, x_b: int, n_b: int, *, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """P(p_b > p_a) with p ~ Beta(prior + successes, prior + failures) in each arm.

    Closed form (Evan Miller's sum over b's first parameter) when that parameter is a whole
    number up to a million; otherwise the integral of f_b(p) F_a(p), by adaptive quadrature
    over the range where b's posterior has its mass."""
    a1, b1 = prior[0] + x_a, prior[1] + n_a - x_a
    a2, b2 = prior[0] + x_b, prior[1] + n_b - x_b
    if float(a2).is_integer() and a2 <= 1_000_000:
        i = np.arange(int(a2), dtype=np.float64)
        terms = (
            special.betaln(a1 + i, b1 + b2)
            - np.log(b2 + i)
            - special.betaln(1 + i, b2)
            - special.betaln(a1, b1)
        )
        return float(min(1.0, max(0.0, np.exp(special.logsumexp(terms)))))
    return beat_by_quadrature(a1, b1, a2, b2)


def beat_by_quadrature(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(Beta(a2, b2) > Beta(a1, b1)) = ∫ f_2(p) F_1(p) dp over 2's central mass."""
    second, first = stats.beta(a2, b2), stats.beta(a1, b1)
    low, high = float(second.ppf(1e-12)), float(second.isf(1e-12))
    points = [float(second.ppf(q)) for q in (0.01, 0.5, 0.99)]
    value, _error = integrate.quad(
        lambda p: float(second.pdf(p) * first.cdf(p)), low, high, points=points, limit=200
    )
    return float(min(1.0, max(0.0, value)))


# --- always valid: the mixture sequential probability ratio test -----------------------------


@dataclass(frozen=True, slots=True)
class SequentialLook:
    """The mSPRT at one look: the mixture likelihood ratio of H0 (difference = `null`), the
    always-valid p-value and confidence sequence so far (running minimum and intersection)."""

    n: int  # units in both arms at this look
    estimate: float
    likelihood_ratio: float
    p_value: float
    interval: Interval


def mixture_likelihood_ratio(
    estimate: float, variance: float, *, mixing_variance: float, null: float = 0.0
) -> float:
    """Λ = ∫ φ(θ̂; θ, V) N(θ; null, τ²) dθ / φ(θ̂; null, V) for a near-normal estimate θ̂ with
    variance V: sqrt(V / (V + τ²)) exp(τ² (θ̂ - null)² / (2 V (V + τ²)))."""
    if variance <= 0:
        return 1.0
    total = variance + mixing_variance
    exponent = mixing_variance * (estimate - null) ** 2 / (2 * variance * total)
    return math.exp(0.5 * math.log(variance / total) + min(exponent, 700.0))


def confidence_sequence(
    estimate: float, variance: float, *, mixing_variance: float, alpha: float = 0.05
) -> Interval:
    """Every θ whose Λ(θ) stays below 1/α: θ̂ ± sqrt(V (V+τ²)/τ² (2 log(1/α) + log((V+τ²)/V)))."""
    if variance <= 0:
        return Interval(-math.inf, math.inf)
    total = variance + mixing_variance
    half = math.sqrt(
        variance * total / mixing_variance * (2 * math.log(1 / alpha) + math.log(total / variance))
    )
    return Interval(estimate - half, estimate + half)


def sequential_test(
    looks: Sequence[tuple[int, float, float]],
    *,
    mixing_variance: float,
    alpha: float = 0.05,
    burn_in: int = 0,
) -> list[SequentialLook]:
    """The mSPRT over a sequence of looks, each (units so far, estimate, its variance):
    p_n = min(p_{n-1}, 1/Λ_n) and the running intersection of the confidence sequences
    (Johari, Koomen, Pekelis and Walsh 2017, "Peeking at A/B tests"). Any look may be the
    one a decision is taken on. Looks before `burn_in` units say nothing (the normal
    approximation of small counts would)."""
    p_value, low, high = 1.0, -math.inf, math.inf
    out: list[SequentialLook] = []
    for n, estimate, variance in looks:
        ratio = 1.0
        if n >= burn_in and variance > 0:
            ratio = mixture_likelihood_ratio(estimate, variance, mixing_variance=mixing_variance)
            p_value = min(p_value, 1.0 / ratio)
            band = confidence_sequence(
                estimate, variance, mixing_variance=mixing_variance, alpha=alpha
            )
            low, high = max(low, band.low), min(high, band.high)
            if low > high:  # possible only by chance under misspecification: keep the last
                low, high = band.low, band.high
        out.append(SequentialLook(n, estimate, ratio, min(1.0, p_value), Interval(low, high)))
    return out


def proportion_looks(
    x_control: Sequence[int],
    n_control: Sequence[int],
    x_arm: Sequence[int],
    n_arm: Sequence[int],
) -> list[tuple[int, float, float]]:
    """Cumulative counts per look as (units, p_arm - p_control, its variance). The variance
    uses (x + ½)/(n + 1) for each rate, so a look with no conversions yet is not certain."""
    looks: list[tuple[int, float, float]] = []
    for xc, nc, xa, na in zip(x_control, n_control, x_arm, n_arm, strict=True):
        if nc <= 0 or na <= 0:
            looks.append((nc + na, 0.0, 0.0))
            continue
        smooth_c, smooth_a = (xc + 0.5) / (nc + 1), (xa + 0.5) / (na + 1)
        variance = smooth_c * (1 - smooth_c) / nc + smooth_a * (1 - smooth_a) / na
        looks.append((nc + na, xa / na - xc / nc, variance))
    return looks


@dataclass(frozen=True, slots=True)
class SampleRatio:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    mismatch: bool  # p below the threshold: the split is broken, the comparison untrustworthy


def sample_ratio_mismatch(
    observed: Sequence[int], shares: Sequence[float], *, threshold: float = 0.001
) -> SampleRatio:
    """Pearson's chi-square of the arms' sizes against the configured shares. The threshold
    is strict (0.001, as is customary) because the check runs on every experiment."""
    total = sum(observed)
    weights = np.asarray(shares, dtype=np.float64)
    expected = total * weights / weights.sum()
    if total == 0 or np.any(expected <= 0):
        return SampleRatio(tuple(observed), tuple(expected.tolist()), 0.0, 1.0, False)
    chi2, p_value = stats.chisquare(np.asarray(observed, dtype=np.float64), expected)
    return SampleRatio(
        tuple(int(v) for v in observed),
        tuple(float(v) for v in expected),
        float(chi2),
        float(p_value),
        bool(p_value < threshold),
    )
