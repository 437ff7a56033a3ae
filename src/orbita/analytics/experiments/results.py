"""An experiment's result from its arms' sufficient statistics, and the verdict a decision
takes on it (`winner`: broadcasts send the winner to the rest only when it says so).

Every non-control arm is compared with the control arm on
    conversion   absolute lift (Newcombe interval), relative lift (log-method interval),
                 pooled z-test, P(beat control) under Beta(1, 1) priors, and the mSPRT
                 (always-valid p-value and confidence sequence over the looks given);
    revenue      per recipient: Welch's t-test and interval, and the same mSPRT;
    guardrails   unsubscribe and complaint rates: z-test, flagged when significantly higher.
The arms' sizes are checked against the configured split (sample-ratio mismatch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from orbita.analytics.experiments.stats import (
    Interval,
    SampleRatio,
    SequentialLook,
    difference_interval,
    probability_to_beat,
    proportion_looks,
    ratio_interval,
    sample_ratio_mismatch,
    sample_variance,
    sequential_test,
    two_proportion_ztest,
    welch_ttest,
    wilson_interval,
)

Metric = Literal["conversion", "revenue"]
Test = Literal["fixed", "sequential"]
# Mixing variance of the mSPRT for a difference in conversion rates: a prior spread of
# effects of about ±1 percentage point (τ = 0.01), the size CRM messages move conversion by.
DEFAULT_MIXING_VARIANCE = 1e-4
# For revenue per recipient the spread is relative to the control's mean: τ = 10% of it.
REVENUE_MIXING_SHARE = 0.1
# Looks with fewer units (both arms) than this carry no sequential evidence.
DEFAULT_BURN_IN = 200


@dataclass(frozen=True, slots=True)
class ArmData:
    """What an arm holds at one look: units (runs, recipients), conversions, the revenue's
    sum and sum of squares per unit, guardrail counts, and `customers` (distinct people,
    which the sample-ratio check counts when given: assignment is per customer)."""

    name: str
    n: int
    conversions: int
    revenue: float = 0.0
    revenue_squares: float = 0.0
    unsubscribes: int = 0
    complaints: int = 0
    customers: int | None = None


@dataclass(frozen=True, slots=True)
class ArmSummary:
    name: str
    control: bool
    n: int
    conversions: int
    conversion_rate: float | None
    conversion_interval: Interval
    revenue: float
    revenue_per_recipient: float | None
    unsubscribes: int
    unsubscribe_rate: float | None
    complaints: int
    complaint_rate: float | None
    expected_share: float | None


@dataclass(frozen=True, slots=True)
class Guardrail:
    metric: str  # unsubscribe_rate | complaint_rate
    arm_rate: float
    control_rate: float
    p_value: float
    worse: bool  # significantly higher than the control's


@dataclass(frozen=True, slots=True)
class Comparison:
    """One arm against the control (differences are arm minus control)."""

    arm: str
    control: str
    absolute_lift: float
    absolute_interval: Interval
    relative_lift: float | None
    relative_interval: Interval | None
    z: float
    p_value: float
    probability_to_beat_control: float
    sequential: SequentialLook
    revenue_difference: float
    revenue_interval: Interval
    revenue_t: float
    revenue_df: float
    revenue_p_value: float
    revenue_sequential: SequentialLook
    guardrails: tuple[Guardrail, ...] = ()


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    control: str
    arms: tuple[ArmSummary, ...]
    comparisons: tuple[Comparison, ...]
    sample_ratio: SampleRatio | None
    alpha: float
    mixing_variance: float
    looks: int

    def arm(self, name: str) -> ArmSummary:
        return next(a for a in self.arms if a.name == name)

    def comparison(self, arm: str) -> Comparison:
        return next(c for c in self.comparisons if c.arm == arm)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision: `winner` is an arm's name, or None with `reason` saying why not."""

    winner: str | None
    reason: str
    metric: Metric
    test: Test
    p_value: float | None = None
    lift: float | None = None
    interval: Interval | None = None


def _rate(count: int, n: int) -> float | None:
    return count / n if n else None


def analyze(
    arms: Sequence[ArmData],
    *,
    control: str | None = None,
    shares: Sequence[float] | None = None,
    looks: Sequence[Sequence[ArmData]] | None = None,
    alpha: float = 0.05,
    mixing_variance: float = DEFAULT_MIXING_VARIANCE,
    burn_in: int = DEFAULT_BURN_IN,
) -> ExperimentResult:
    """Compare every arm with `control` (default: the first arm).

    `shares`: the configured split, in the order of `arms` (for the sample-ratio check).
    `looks`: the arms at each earlier look, in time order, the same arms in the same order;
    the sequential test runs over them and the final totals. Without them it runs on the
    totals alone, which stays valid (a p-value no smaller than the running minimum)."""
    if len(arms) < 2:
        raise ValueError("an experiment needs at least two arms")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names repeat: {', '.join(names)}")
    for arm in arms:
        if arm.n < 0 or not 0 <= arm.conversions <= arm.n:
            raise ValueError(
                f"arm {arm.name!r}: {arm.conversions} conversions of {arm.n} units "
                "(a unit converts at most once)"
            )
    control_name = control if control is not None else names[0]
    if control_name not in names:
        raise ValueError(f"control {control_name!r} is not an arm ({', '.join(names)})")
    if shares is not None and len(shares) != len(arms):
        raise ValueError("shares: one per arm")
    history = [list(look) for look in (looks or [])]
    for look in history:
        if [a.name for a in look] != names:
            raise ValueError("looks: the same arms in the same order as `arms`")
    history.append(list(arms))
    base = arms[names.index(control_name)]
    total_share = sum(shares) if shares else 0.0
    summaries = tuple(
        ArmSummary(
            name=a.name,
            control=a.name == control_name,
            n=a.n,
            conversions=a.conversions,
            conversion_rate=_rate(a.conversions, a.n),
            conversion_interval=wilson_interval(a.conversions, a.n, alpha=alpha),
            revenue=a.revenue,
            revenue_per_recipient=a.revenue / a.n if a.n else None,
            unsubscribes=a.unsubscribes,
            unsubscribe_rate=_rate(a.unsubscribes, a.n),
            complaints=a.complaints,
            complaint_rate=_rate(a.complaints, a.n),
            expected_share=shares[i] / total_share if shares and total_share else None,
        )
        for i, a in enumerate(arms)
    )
    comparisons = tuple(
        _compare(
            arm,
            base,
            [look[i] for look in history],
            [look[names.index(control_name)] for look in history],
            alpha=alpha,
            mixing_variance=mixing_variance,
            burn_in=burn_in,
        )
        for i, arm in enumerate(arms)
        if arm.name != control_name and arm.n > 0 and base.n > 0
    )
    ratio = None
    if shares is not None:
        units = [a.customers if a.customers is not None else a.n for a in arms]
        ratio = sample_ratio_mismatch(units, shares)
    return ExperimentResult(
        control=control_name,
        arms=summaries,
        comparisons=comparisons,
        sample_ratio=ratio,
        alpha=alpha,
        mixing_variance=mixing_variance,
        looks=len(history),
    )


def _compare(
    arm: ArmData,
    base: ArmData,
    arm_looks: Sequence[ArmData],
    base_looks: Sequence[ArmData],
    *,
    alpha: float,
    mixing_variance: float,
    burn_in: int,
) -> Comparison:
    x1, n1, x0, n0 = arm.conversions, arm.n, base.conversions, base.n
    p1, p0 = x1 / n1, x0 / n0
    relative = ratio_interval(x1, n1, x0, n0, alpha=alpha)
    ztest = two_proportion_ztest(x1, n1, x0, n0)
    conversion_looks = proportion_looks(
        [b.conversions for b in base_looks],
        [b.n for b in base_looks],
        [a.conversions for a in arm_looks],
        [a.n for a in arm_looks],
    )
    sequential = sequential_test(
        conversion_looks, mixing_variance=mixing_variance, alpha=alpha, burn_in=burn_in
    )[-1]
    mean1, mean0 = arm.revenue / n1, base.revenue / n0
    var1 = sample_variance(n1, arm.revenue, arm.revenue_squares)
    var0 = sample_variance(n0, base.revenue, base.revenue_squares)
    welch = welch_ttest(n1, mean1, var1, n0, mean0, var0, alpha=alpha)
    revenue_mixing = (REVENUE_MIXING_SHARE * mean0) ** 2 or 1.0
    revenue_sequential = sequential_test(
        [_mean_look(a, b) for a, b in zip(arm_looks, base_looks, strict=True)],
        mixing_variance=revenue_mixing,
        alpha=alpha,
        burn_in=burn_in,
    )[-1]
    guardrails = tuple(
        _guardrail(metric, getattr(arm, count), n1, getattr(base, count), n0, alpha=alpha)
        for metric, count in (
            ("unsubscribe_rate", "unsubscribes"),
            ("complaint_rate", "complaints"),
        )
    )
    return Comparison(
        arm=arm.name,
        control=base.name,
        absolute_lift=p1 - p0,
        absolute_interval=difference_interval(x1, n1, x0, n0, alpha=alpha),
        relative_lift=p1 / p0 - 1 if p0 > 0 else None,
        relative_interval=Interval(relative.low - 1, relative.high - 1) if relative else None,
        z=ztest.statistic,
        p_value=ztest.p_value,
        probability_to_beat_control=probability_to_beat(x0, n0, x1, n1),
        sequential=sequential,
        revenue_difference=welch.difference,
        revenue_interval=welch.interval,
        revenue_t=welch.statistic,
        revenue_df=welch.df,
        revenue_p_value=welch.p_value,
        revenue_sequential=revenue_sequential,
        guardrails=guardrails,
    )


def _mean_look(arm: ArmData, base: ArmData) -> tuple[int, float, float]:
    if arm.n < 2 or base.n < 2:
        return (arm.n + base.n, 0.0, 0.0)
    var1 = sample_variance(arm.n, arm.revenue, arm.revenue_squares)
    var0 = sample_variance(base.n, base.revenue, base.revenue_squares)
    return (
        arm.n + base.n,
        arm.revenue / arm.n - base.revenue / base.n,
        var1 / arm.n + var0 / base.n,
    )


def _guardrail(
    metric: str, count: int, n: int, base_count: int, base_n: int, *, alpha: float
) -> Guardrail:
    test = two_proportion_ztest(count, n, base_count, base_n)
    return Guardrail(
        metric=metric,
        arm_rate=count / n,
        control_rate=base_count / base_n,
        p_value=test.p_value,
        worse=test.statistic > 0 and test.p_value < alpha,
    )


def winner(
    result: ExperimentResult,
    *,
    metric: Metric = "conversion",
    test: Test = "fixed",
    alpha: float | None = None,
) -> Verdict:
    """The arm to send to everyone, only when the statistics call it.

    A non-control arm wins when it beats the control significantly (the `test`'s p-value
    below alpha, Bonferroni-divided among the comparisons) and no guardrail of its is
    significantly worse; of several such, the one with the largest lift. The control wins
    when every other arm is significantly worse. Otherwise no winner, and `reason` says why:
    a sample-ratio mismatch, an empty arm, a guardrail, or no significant difference yet."""
    level = result.alpha if alpha is None else alpha

    def verdict(name: str | None, reason: str, chosen: Comparison | None = None) -> Verdict:
        if chosen is None:
            return Verdict(name, reason, metric, test)
        lift, interval, p_value = _measure(chosen, metric, test)
        return Verdict(name, reason, metric, test, p_value, lift, interval)

    ratio = result.sample_ratio
    if ratio is not None and ratio.mismatch:
        return verdict(
            None,
            f"sample ratio mismatch (chi-square p = {ratio.p_value:.2g}): arms of "
            f"{', '.join(map(str, ratio.observed))} against the expected "
            f"{', '.join(f'{e:.0f}' for e in ratio.expected)}; the split is broken",
        )
    empty = [a.name for a in result.arms if a.n == 0]
    if empty:
        return verdict(None, f"no recipients yet in {', '.join(empty)}")
    corrected = level / len(result.comparisons)
    better: list[Comparison] = []
    worse: list[Comparison] = []
    held_back: list[str] = []
    for comparison in result.comparisons:
        lift, _interval, p_value = _measure(comparison, metric, test)
        if p_value >= corrected:
            continue
        if lift < 0:
            worse.append(comparison)
            continue
        harmed = [g.metric for g in comparison.guardrails if g.worse]
        if harmed:
            held_back.append(f"{comparison.arm} ({', '.join(harmed)} significantly higher)")
        else:
            better.append(comparison)
    if better:
        best = max(better, key=lambda c: _measure(c, metric, test)[0])
        lift, interval, p_value = _measure(best, metric, test)
        return verdict(
            best.arm,
            f"{best.arm} beats {best.control} on {metric}: {_show(lift, metric)} "
            f"({_show_interval(interval, metric)}), {test} p = {p_value:.3g} < {corrected:.3g}",
            best,
        )
    if held_back:
        return verdict(None, "better but failing a guardrail: " + "; ".join(held_back))
    if worse and len(worse) == len(result.comparisons):
        return verdict(
            result.control,
            f"every other arm is significantly worse than {result.control} on {metric} "
            f"({test} test)",
            worse[0],
        )
    closest = min(result.comparisons, key=lambda c: _measure(c, metric, test)[2])
    return verdict(
        None,
        f"no arm differs significantly from {result.control} on {metric} yet "
        f"(smallest {test} p = {_measure(closest, metric, test)[2]:.3g}, needs < {corrected:.3g})",
        closest,
    )


def _measure(comparison: Comparison, metric: Metric, test: Test) -> tuple[float, Interval, float]:
    """(lift, its interval, p-value) of the chosen metric and test."""
    if metric == "conversion":
        if test == "sequential":
            look = comparison.sequential
            return comparison.absolute_lift, look.interval, look.p_value
        return comparison.absolute_lift, comparison.absolute_interval, comparison.p_value
    if test == "sequential":
        look = comparison.revenue_sequential
        return comparison.revenue_difference, look.interval, look.p_value
    return comparison.revenue_difference, comparison.revenue_interval, comparison.revenue_p_value


def _show(value: float, metric: Metric) -> str:
    return f"{value * 100:+.2f} pp" if metric == "conversion" else f"{value:+.2f} per recipient"


def _show_interval(interval: Interval, metric: Metric) -> str:
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "interval unbounded yet"
    scale = 100 if metric == "conversion" else 1
    unit = " pp" if metric == "conversion" else ""
    return f"CI {interval.low * scale:+.2f} to {interval.high * scale:+.2f}{unit}"
