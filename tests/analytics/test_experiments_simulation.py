"""Many simulated experiments, looked at every day: the sequential test keeps its false
positives near 5% where repeated z-tests do not; the intervals cover the true effect at the
stated rate, including the true campaign effects of the demo's response generator."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from scipy import stats

from orbita.analytics.experiments.results import DEFAULT_BURN_IN, DEFAULT_MIXING_VARIANCE
from orbita.analytics.experiments.stats import (
    difference_interval,
    proportion_looks,
    sequential_test,
    welch_ttest,
)
from orbita.simulation.response import CAMPAIGNS, sample_responses

REPLICATIONS = 1500
DAYS = 28
DAILY = 250  # recipients per arm and day
RATE = 0.05


def _cumulative(rng: np.random.Generator, rate: float) -> npt.NDArray[np.int64]:
    """Conversions so far at each daily look, per replication: (REPLICATIONS, DAYS)."""
    return np.cumsum(rng.binomial(DAILY, rate, size=(REPLICATIONS, DAYS)), axis=1)


def _peeking(control: npt.NDArray[np.int64], arm: npt.NDArray[np.int64]) -> dict[str, float]:
    """Share of experiments declared significant at some daily look, and how often the
    confidence sequence held the true difference at every look (`lift`: the truth)."""
    n = [DAILY * (day + 1) for day in range(DAYS)]
    sequential = 0
    for xc, xa in zip(control.tolist(), arm.tolist(), strict=True):
        looks = sequential_test(
            proportion_looks(xc, n, xa, n),
            mixing_variance=DEFAULT_MIXING_VARIANCE,
            burn_in=DEFAULT_BURN_IN,
        )
        sequential += looks[-1].p_value < 0.05
    # The naive analyst: a fixed-horizon z-test every day, stopping at the first p < 0.05
    # (vectorised here; `two_proportion_ztest` is checked against statsmodels elsewhere).
    size = np.asarray(n, dtype=np.float64)
    pooled = (control + arm) / (2 * size)
    se = np.sqrt(pooled * (1 - pooled) * 2 / size)
    z = np.divide((arm - control) / size, se, out=np.zeros_like(se), where=se > 0)
    naive = np.any(2 * stats.norm.sf(np.abs(z)) < 0.05, axis=1).mean()
    return {"naive": float(naive), "sequential": sequential / REPLICATIONS}


def test_a_a_false_positives_under_daily_peeking() -> None:
    rng = np.random.default_rng(20170601)
    rates = _peeking(_cumulative(rng, RATE), _cumulative(rng, RATE))
    # Twenty-eight looks with a fixed-horizon test: well above the 5% it claims.
    print(f"A/A false positives over {DAYS} daily looks: {rates}")
    assert rates["naive"] > 0.15, rates
    assert rates["sequential"] <= 0.065, rates


def test_a_b_sequential_test_finds_a_real_lift_and_its_sequence_covers_it() -> None:
    rng = np.random.default_rng(42)
    lift = 0.02
    control, arm = _cumulative(rng, RATE), _cumulative(rng, RATE + lift)
    assert _peeking(control, arm)["sequential"] >= 0.8
    n = [DAILY * (day + 1) for day in range(DAYS)]
    covered = 0
    for xc, xa in zip(control.tolist(), arm.tolist(), strict=True):
        looks = sequential_test(
            proportion_looks(xc, n, xa, n), mixing_variance=DEFAULT_MIXING_VARIANCE, burn_in=200
        )
        covered += all(look.interval.contains(lift) for look in looks)
    # Time-uniform: the running intersection holds the truth at every look at once.
    assert covered / REPLICATIONS >= 0.95


def test_fixed_horizon_intervals_cover_at_the_stated_rate() -> None:
    rng = np.random.default_rng(7)
    size, lift = 4000, 0.015
    control = rng.binomial(size, RATE, REPLICATIONS)
    arm = rng.binomial(size, RATE + lift, REPLICATIONS)
    covered = sum(
        difference_interval(int(a), size, int(c), size).contains(lift)
        for c, a in zip(control, arm, strict=True)
    )
    assert 0.935 <= covered / REPLICATIONS <= 0.965


def test_holdout_uplift_covers_the_generators_true_campaign_effect() -> None:
    """Customers answer a campaign through the demo's response model, a random 20% held
    out: the measured uplift (conversion and revenue per recipient) covers the generator's
    true effect in about 95% of repeated campaigns."""
    rng = np.random.default_rng(99)
    size, runs = 3000, 250
    users = [f"sim-{i}" for i in range(size)]
    goal_rate = rng.gamma(2.0, 0.01, size)
    engagement = rng.uniform(0.4, 1.6, size)
    order_value = rng.gamma(3.0, 30.0, size)
    campaign = CAMPAIGNS["clothing-store"]["abandoned_cart"]
    conversion_hits = revenue_hits = 0
    for seed in range(runs):
        treated = rng.random(size) >= 0.2
        answers = sample_responses(
            store="clothing-store",
            campaign="abandoned_cart",
            seed=seed,
            now=datetime(2026, 3, 1, tzinfo=UTC),
            user_ids=users,
            active=np.ones(size, dtype=np.bool_),
            goal_rate=goal_rate,
            engagement=engagement,
            order_value=order_value,
            treated=treated,
        )
        true_effect = answers.treated_probability - answers.baseline_probability
        held, sent = answers.value[~treated], answers.value[treated]
        measured = difference_interval(
            int(answers.converted[treated].sum()),
            sent.size,
            int(answers.converted[~treated].sum()),
            held.size,
        )
        conversion_hits += measured.contains(float(true_effect.mean()))
        revenue = welch_ttest(
            sent.size, sent.mean(), sent.var(ddof=1), held.size, held.mean(), held.var(ddof=1)
        )
        # An order's value averages order_value (Gamma(4, 1/4) draw of mean 1).
        revenue_hits += revenue.interval.contains(float((true_effect * order_value).mean()))
    assert campaign.uplift == float(np.round(true_effect.mean(), 6))
    print(f"coverage: conversion {conversion_hits / runs:.3f}, revenue {revenue_hits / runs:.3f}")
    assert 0.92 <= conversion_hits / runs <= 0.98
    assert 0.92 <= revenue_hits / runs <= 0.98
