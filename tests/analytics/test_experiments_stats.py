"""Experiment statistics against statsmodels and scipy on the same numbers, the issue's
example (120/2400 vs 150/2400: z -1.879, p 0.060), the Bayesian probability against an
independent quadrature, the mSPRT's defining formulas, the sample-ratio check and the
verdict broadcasts take."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from orbita.analytics.experiments import ArmData, analyze, winner
from orbita.analytics.experiments.stats import (
    confidence_sequence,
    difference_interval,
    mixture_likelihood_ratio,
    probability_to_beat,
    proportion_looks,
    ratio_interval,
    sample_ratio_mismatch,
    sequential_test,
    two_proportion_ztest,
    welch_ttest,
    wilson_interval,
)

CASES = [(120, 2400, 150, 2400), (3, 50, 9, 61), (0, 400, 7, 380), (1500, 30000, 1580, 29950)]


def test_the_issues_example() -> None:
    result = two_proportion_ztest(120, 2400, 150, 2400)
    assert round(result.statistic, 3) == -1.879
    assert round(result.p_value, 3) == 0.060


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), CASES)
def test_ztest_matches_statsmodels(x1: int, n1: int, x2: int, n2: int) -> None:
    z, p = proportions_ztest([x1, x2], [n1, n2])
    ours = two_proportion_ztest(x1, n1, x2, n2)
    assert ours.statistic == pytest.approx(float(z), rel=1e-12)
    assert ours.p_value == pytest.approx(float(p), rel=1e-10)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), CASES)
def test_intervals_match_statsmodels(x1: int, n1: int, x2: int, n2: int) -> None:
    low, high = proportion_confint(x1, n1, method="wilson")
    wilson = wilson_interval(x1, n1)
    assert (wilson.low, wilson.high) == pytest.approx((low, high), abs=1e-12)
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
    newcombe = difference_interval(x1, n1, x2, n2)
    assert (newcombe.low, newcombe.high) == pytest.approx((low, high), abs=1e-12)
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="wald", compare="diff")
    wald = difference_interval(x1, n1, x2, n2, method="wald")
    assert (wald.low, wald.high) == pytest.approx((low, high), abs=1e-12)
    ratio = ratio_interval(x1, n1, x2, n2)
    if x1 == 0:
        assert ratio is None
    else:
        low, high = confint_proportions_2indep(x1, n1, x2, n2, method="log", compare="ratio")
        assert ratio is not None
        assert (ratio.low, ratio.high) == pytest.approx((low, high), rel=1e-10)


def test_welch_matches_scipy_on_raw_values_and_on_stats() -> None:
    rng = np.random.default_rng(11)
    # Revenue per recipient: mostly zeros, some orders (the shape Welch must cope with).
    a = np.where(rng.random(3000) < 0.05, rng.gamma(2.0, 40.0, 3000), 0.0)
    b = np.where(rng.random(2500) < 0.065, rng.gamma(2.0, 42.0, 2500), 0.0)
    ours = welch_ttest(a.size, a.mean(), a.var(ddof=1), b.size, b.mean(), b.var(ddof=1))
    raw = stats.ttest_ind(a, b, equal_var=False)
    assert ours.statistic == pytest.approx(float(raw.statistic), rel=1e-10)
    assert ours.p_value == pytest.approx(float(raw.pvalue), rel=1e-8)
    assert ours.df == pytest.approx(float(raw.df), rel=1e-10)
    low, high = raw.confidence_interval(0.95)
    assert (ours.interval.low, ours.interval.high) == pytest.approx((low, high), rel=1e-9)
    from_stats = stats.ttest_ind_from_stats(
        a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size, equal_var=False
    )
    assert ours.p_value == pytest.approx(float(from_stats.pvalue), rel=1e-8)


def test_analyze_revenue_from_sums_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    a = np.where(rng.random(2000) < 0.05, rng.gamma(2.0, 40.0, 2000), 0.0)
    b = np.where(rng.random(2100) < 0.07, rng.gamma(2.0, 40.0, 2100), 0.0)
    arms = [
        ArmData("A", a.size, int((a > 0).sum()), float(a.sum()), float((a * a).sum())),
        ArmData("B", b.size, int((b > 0).sum()), float(b.sum()), float((b * b).sum())),
    ]
    comparison = analyze(arms).comparison("B")
    raw = stats.ttest_ind(b, a, equal_var=False)
    assert comparison.revenue_t == pytest.approx(float(raw.statistic), rel=1e-8)
    assert comparison.revenue_p_value == pytest.approx(float(raw.pvalue), rel=1e-6)
    assert comparison.revenue_difference == pytest.approx(b.mean() - a.mean(), rel=1e-12)


@pytest.mark.parametrize(
    ("x_a", "n_a", "x_b", "n_b"),
    [(120, 2400, 150, 2400), (0, 10, 2, 10), (40, 100, 38, 100), (900, 20000, 1000, 20000)],
)
def test_probability_to_beat_against_quadrature(x_a: int, n_a: int, x_b: int, n_b: int) -> None:
    # Independently: P(B > A) = 1 - ∫ f_A(p) F_B(p) dp (the other way round from the code).
    first, second = stats.beta(1 + x_a, 1 + n_a - x_a), stats.beta(1 + x_b, 1 + n_b - x_b)
    low, high = first.ppf(1e-13), first.isf(1e-13)
    a_first, _ = integrate.quad(lambda p: first.pdf(p) * second.cdf(p), low, high, limit=400)
    assert probability_to_beat(x_a, n_a, x_b, n_b) == pytest.approx(1 - a_first, abs=1e-8)


def test_probability_to_beat_non_integer_prior_and_symmetry() -> None:
    forward = probability_to_beat(30, 500, 42, 500, prior=(0.5, 0.5))
    backward = probability_to_beat(42, 500, 30, 500, prior=(0.5, 0.5))
    assert forward + backward == pytest.approx(1.0, abs=1e-9)
    # A large Monte-Carlo draw agrees to its own error (here, in the test only).
    rng = np.random.default_rng(3)
    draws = rng.beta(42.5, 458.5, 400_000) > rng.beta(30.5, 470.5, 400_000)
    assert forward == pytest.approx(draws.mean(), abs=4e-3)
    assert probability_to_beat(10, 100, 10, 100) == pytest.approx(0.5, abs=1e-9)


def test_mixture_likelihood_ratio_is_the_normal_mixture_integral() -> None:
    estimate, variance, tau2 = 0.013, 4e-5, 1e-4
    numerator, _ = integrate.quad(
        lambda theta: (
            stats.norm.pdf(estimate, theta, math.sqrt(variance))
            * stats.norm.pdf(theta, 0, math.sqrt(tau2))
        ),
        -0.2,
        0.2,
        points=[0.0, estimate],
    )
    expected = numerator / stats.norm.pdf(estimate, 0, math.sqrt(variance))
    assert mixture_likelihood_ratio(estimate, variance, mixing_variance=tau2) == pytest.approx(
        expected, rel=1e-7
    )


def test_confidence_sequence_is_where_the_ratio_stays_below_one_over_alpha() -> None:
    estimate, variance, tau2 = 0.02, 3e-5, 1e-4
    band = confidence_sequence(estimate, variance, mixing_variance=tau2)
    for edge in (band.low, band.high):
        ratio = mixture_likelihood_ratio(estimate - edge, variance, mixing_variance=tau2)
        assert ratio == pytest.approx(20.0, rel=1e-9)
    inside = mixture_likelihood_ratio((estimate - band.low) * 0.99, variance, mixing_variance=tau2)
    assert inside < 20.0
    # Wider than the fixed-horizon interval: the price of looking whenever you like.
    assert band.high - estimate > 1.96 * math.sqrt(variance)


def test_sequential_p_values_only_fall_and_intervals_only_narrow() -> None:
    rng = np.random.default_rng(8)
    a = rng.random(20000) < 0.05
    b = rng.random(20000) < 0.06
    cuts = np.arange(500, 20001, 500)
    looks = proportion_looks(
        [int(a[:c].sum()) for c in cuts], list(cuts), [int(b[:c].sum()) for c in cuts], list(cuts)
    )
    out = sequential_test(looks, mixing_variance=1e-4, burn_in=200)
    p_values = [look.p_value for look in out]
    widths = [look.interval.high - look.interval.low for look in out]
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert all(later <= earlier for earlier, later in itertools.pairwise(widths))
    # A true 1-point lift over 20 000 per arm is found.
    assert out[-1].p_value < 0.05
    assert out[-1].interval.low > 0


def test_sequential_p_value_of_totals_alone_is_never_below_the_running_one() -> None:
    arms = [ArmData("A", 5000, 250), ArmData("B", 5000, 305)]
    earlier = [[ArmData("A", 2500, 110), ArmData("B", 2500, 160)]]
    with_history = analyze(arms, looks=earlier).comparison("B").sequential
    alone = analyze(arms).comparison("B").sequential
    assert with_history.p_value <= alone.p_value
    assert with_history.interval.high - with_history.interval.low <= (
        alone.interval.high - alone.interval.low
    )


def test_sample_ratio_mismatch_matches_scipy_chisquare() -> None:
    fine = sample_ratio_mismatch([5040, 4960], [0.5, 0.5])
    chi2, p = stats.chisquare([5040, 4960], [5000, 5000])
    assert (fine.chi2, fine.p_value) == pytest.approx((chi2, p))
    assert not fine.mismatch
    broken = sample_ratio_mismatch([9210, 790], [0.9, 0.1])
    assert broken.p_value == pytest.approx(stats.chisquare([9210, 790], [9000, 1000]).pvalue)
    assert broken.mismatch


def test_winner_calls_a_clear_winner_and_explains_otherwise() -> None:
    clear = analyze([ArmData("A", 10000, 500), ArmData("B", 10000, 640)], shares=[1, 1])
    verdict = winner(clear)
    assert verdict.winner == "B"
    assert verdict.p_value is not None and verdict.p_value < 0.05
    assert winner(clear, test="sequential").winner == "B"

    close = analyze([ArmData("A", 2400, 120), ArmData("B", 2400, 150)], shares=[1, 1])
    verdict = winner(close)
    assert verdict.winner is None
    assert "no arm differs significantly" in verdict.reason
    assert verdict.p_value == pytest.approx(0.0602, abs=1e-4)

    skewed = analyze([ArmData("A", 10000, 500), ArmData("B", 8000, 600)], shares=[1, 1])
    verdict = winner(skewed)
    assert verdict.winner is None
    assert "sample ratio mismatch" in verdict.reason

    worse = analyze([ArmData("A", 10000, 640), ArmData("B", 10000, 500)])
    assert winner(worse).winner == "A"


def test_winner_holds_back_an_arm_that_fails_a_guardrail() -> None:
    arms = [
        ArmData("A", 10000, 500, unsubscribes=20),
        ArmData("B", 10000, 640, unsubscribes=80),
    ]
    verdict = winner(analyze(arms))
    assert verdict.winner is None
    assert "unsubscribe_rate" in verdict.reason


def test_winner_by_revenue_and_with_several_arms() -> None:
    rng = np.random.default_rng(21)

    def arm(name: str, rate: float, n: int) -> ArmData:
        values = np.where(rng.random(n) < rate, rng.gamma(2.0, 40.0, n), 0.0)
        return ArmData(
            name, n, int((values > 0).sum()), float(values.sum()), float((values**2).sum())
        )

    result = analyze([arm("A", 0.05, 20000), arm("B", 0.05, 20000), arm("C", 0.08, 20000)])
    assert winner(result, metric="revenue").winner == "C"
    assert winner(result).winner == "C"
    assert len(result.comparisons) == 2


def test_tiny_and_impossible_arms() -> None:
    tiny = analyze([ArmData("A", 1, 1, 30.0, 900.0), ArmData("B", 1, 0)])
    assert tiny.comparison("B").revenue_p_value == 1.0
    assert winner(tiny).winner is None
    assert (
        "no recipients yet in B" in winner(analyze([ArmData("A", 5, 1), ArmData("B", 0, 0)])).reason
    )
    with pytest.raises(ValueError, match="3 conversions of 2 units"):
        analyze([ArmData("A", 2, 3), ArmData("B", 2, 0)])
