"""What the experiments say, for people and for plots: each journey's uplift over its
holdout (incremental conversions and revenue with intervals — whether a scenario earns its
keep), lines for the demo, and tidy JSON-ready rows for the CLI and the API."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from orbita.analytics.experiments.data import Experiment, read_experiments
from orbita.analytics.experiments.results import Verdict, winner
from orbita.analytics.experiments.stats import Interval
from orbita.store.events import EventStore


@dataclass(frozen=True, slots=True)
class Uplift:
    """A journey against its holdout: differences are treatment minus holdout; incremental
    totals scale the per-recipient difference (and its interval) to the treated runs."""

    journey: str
    treated: int
    held_out: int
    treated_rate: float | None
    holdout_rate: float | None
    uplift: float
    interval: Interval
    incremental_conversions: float
    incremental_conversions_interval: Interval
    revenue_per_recipient: float
    revenue_interval: Interval
    incremental_revenue: float
    incremental_revenue_interval: Interval
    p_value: float
    sequential_p_value: float
    sequential_interval: Interval
    verdict: Verdict  # on conversion, sequential: may be read on any day


def holdout_uplift(experiment: Experiment) -> Uplift | None:
    """The uplift of a holdout experiment (None for other kinds, or an empty arm)."""
    if experiment.kind != "holdout" or not experiment.result.comparisons:
        return None
    result = experiment.result
    treated, held = result.arm("treatment"), result.arm("holdout")
    comparison = result.comparison("treatment")
    return Uplift(
        journey=experiment.journey,
        treated=treated.n,
        held_out=held.n,
        treated_rate=treated.conversion_rate,
        holdout_rate=held.conversion_rate,
        uplift=comparison.absolute_lift,
        interval=comparison.absolute_interval,
        incremental_conversions=comparison.absolute_lift * treated.n,
        incremental_conversions_interval=comparison.absolute_interval.scaled(treated.n),
        revenue_per_recipient=comparison.revenue_difference,
        revenue_interval=comparison.revenue_interval,
        incremental_revenue=comparison.revenue_difference * treated.n,
        incremental_revenue_interval=comparison.revenue_interval.scaled(treated.n),
        p_value=comparison.p_value,
        sequential_p_value=comparison.sequential.p_value,
        sequential_interval=comparison.sequential.interval,
        verdict=winner(result, test="sequential"),
    )


def journey_uplifts(
    *,
    state: Engine,
    events: EventStore,
    journeys: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[Uplift]:
    """Every journey with a holdout, measured against it."""
    found = read_experiments(state=state, events=events, journeys=journeys, now=now)
    return [u for u in map(holdout_uplift, found) if u is not None]


def uplift_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A header and one line per journey (rows of `uplift_plain`), within 80 columns: the
    uplift in points, the incremental conversions and revenue, each with its 95% interval
    (`?` for an end not known)."""
    width = max([len("journey"), *(len(row["journey"]) for row in rows)])
    header = f"{'uplift, pp [95% CI]':<19} {'extra conversions':<17} extra revenue"
    lines = [f"{'journey':<{width}}  {header}"]
    for row in rows:
        uplift = _with_interval(row, "uplift", "uplift_low", "uplift_high", _pp)
        extra = _with_interval(
            row,
            "incremental_conversions",
            "incremental_conversions_low",
            "incremental_conversions_high",
            lambda v: f"{v:+.0f}",
        )
        money = _with_interval(
            row,
            "incremental_revenue",
            "incremental_revenue_low",
            "incremental_revenue_high",
            short_money,
        )
        lines.append(f"{row['journey']:<{width}}  {uplift:<19} {extra:<17} {money}")
    return lines


def uplift_summary(
    *, state: Engine, events: EventStore, journeys: Sequence[str] | None = None
) -> list[str]:
    """`uplift_lines` of every journey with a holdout: what the demo prints at its end."""
    return uplift_lines(
        [uplift_plain(u) for u in journey_uplifts(state=state, events=events, journeys=journeys)]
    )


def _pp(value: float) -> str:
    return f"{value * 100:+.1f}"


def _with_interval(
    row: Mapping[str, Any], value: str, low: str, high: str, show: Callable[[float], str]
) -> str:
    ends = [row[low], row[high]]
    shown = ["?" if end is None else show(end) for end in ends]
    return f"{show(row[value])} [{shown[0]}, {shown[1]}]"


def short_money(value: float) -> str:
    """Short amounts: +950, +3.2k, -1.4M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:+.1f}{suffix}"
    return f"{value:+.0f}"


# --- tidy rows ---------------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded end (a sequence not yet narrowed) is null."""
    return value if value is not None and math.isfinite(value) else None


def _ends(interval: Interval | None) -> dict[str, float | None]:
    if interval is None:
        return {"low": None, "high": None}
    return {"low": _finite(interval.low), "high": _finite(interval.high)}


def experiment_plain(experiment: Experiment, *, timeline: bool = False) -> dict[str, Any]:
    """One experiment as plain data: `arms` is tidy (one row per arm, the comparison with
    the control on the same row), ready to plot; `timeline` (daily looks) on request."""
    result = experiment.result
    rows: list[dict[str, Any]] = []
    for arm in result.arms:
        row: dict[str, Any] = {
            "journey": experiment.journey,
            "experiment": experiment.name,
            "kind": experiment.kind,
            "arm": arm.name,
            "control": arm.control,
            "n": arm.n,
            "conversions": arm.conversions,
            "conversion_rate": arm.conversion_rate,
            "conversion_low": _finite(arm.conversion_interval.low),
            "conversion_high": _finite(arm.conversion_interval.high),
            "revenue": arm.revenue,
            "revenue_per_recipient": arm.revenue_per_recipient,
            "unsubscribes": arm.unsubscribes,
            "unsubscribe_rate": arm.unsubscribe_rate,
            "complaints": arm.complaints,
            "complaint_rate": arm.complaint_rate,
            "expected_share": arm.expected_share,
        }
        compared = next((c for c in result.comparisons if c.arm == arm.name), None)
        if compared is not None:
            row |= {
                "lift": compared.absolute_lift,
                "lift_low": _finite(compared.absolute_interval.low),
                "lift_high": _finite(compared.absolute_interval.high),
                "relative_lift": compared.relative_lift,
                "relative_low": _ends(compared.relative_interval)["low"],
                "relative_high": _ends(compared.relative_interval)["high"],
                "z": compared.z,
                "p_value": compared.p_value,
                "probability_to_beat_control": compared.probability_to_beat_control,
                "sequential_p_value": compared.sequential.p_value,
                "sequential_low": _finite(compared.sequential.interval.low),
                "sequential_high": _finite(compared.sequential.interval.high),
                "revenue_difference": compared.revenue_difference,
                "revenue_low": _finite(compared.revenue_interval.low),
                "revenue_high": _finite(compared.revenue_interval.high),
                "revenue_t": compared.revenue_t,
                "revenue_df": compared.revenue_df,
                "revenue_p_value": compared.revenue_p_value,
                "guardrails_worse": [g.metric for g in compared.guardrails if g.worse],
            }
        rows.append(row)
    ratio = result.sample_ratio
    fixed, sequential = winner(result), winner(result, test="sequential")
    plain: dict[str, Any] = {
        "journey": experiment.journey,
        "kind": experiment.kind,
        "experiment": experiment.name,
        "control": result.control,
        "looks": result.looks,
        "sample_ratio": None
        if ratio is None
        else {
            "observed": list(ratio.observed),
            "expected": list(ratio.expected),
            "chi2": ratio.chi2,
            "p_value": ratio.p_value,
            "mismatch": ratio.mismatch,
        },
        "verdict": {"winner": fixed.winner, "reason": fixed.reason},
        "sequential_verdict": {"winner": sequential.winner, "reason": sequential.reason},
        "arms": rows,
    }
    if timeline:
        plain["timeline"] = [
            {
                "journey": experiment.journey,
                "experiment": experiment.name,
                "arm": arm,
                "at": point.at.isoformat(),
                "n": point.n,
                "lift": point.estimate,
                "p_value": point.p_value,
                "low": _finite(point.interval.low),
                "high": _finite(point.interval.high),
            }
            for arm, points in experiment.timeline.items()
            for point in points
        ]
    return plain


def uplift_plain(item: Uplift) -> dict[str, Any]:
    return {
        "journey": item.journey,
        "treated": item.treated,
        "held_out": item.held_out,
        "treated_rate": item.treated_rate,
        "holdout_rate": item.holdout_rate,
        "uplift": item.uplift,
        "uplift_low": _finite(item.interval.low),
        "uplift_high": _finite(item.interval.high),
        "incremental_conversions": item.incremental_conversions,
        "incremental_conversions_low": _finite(item.incremental_conversions_interval.low),
        "incremental_conversions_high": _finite(item.incremental_conversions_interval.high),
        "revenue_per_recipient": item.revenue_per_recipient,
        "revenue_low": _finite(item.revenue_interval.low),
        "revenue_high": _finite(item.revenue_interval.high),
        "incremental_revenue": item.incremental_revenue,
        "incremental_revenue_low": _finite(item.incremental_revenue_interval.low),
        "incremental_revenue_high": _finite(item.incremental_revenue_interval.high),
        "p_value": item.p_value,
        "sequential_p_value": item.sequential_p_value,
        "earns_its_keep": item.verdict.winner == "treatment",
        "reason": item.verdict.reason,
    }


def experiments_report(
    *,
    state: Engine,
    events: EventStore,
    journeys: Sequence[str] | None = None,
    now: datetime | None = None,
    timeline: bool = False,
) -> dict[str, Any]:
    """What `orbita analytics experiments --json` and `GET /v1/analytics/experiments`
    return: every experiment (tidy arm rows, verdicts, optionally daily looks) and every
    journey's uplift over its holdout."""
    found = read_experiments(state=state, events=events, journeys=journeys, now=now)
    return {
        "experiments": [experiment_plain(e, timeline=timeline) for e in found],
        "uplift": [uplift_plain(u) for u in map(holdout_uplift, found) if u is not None],
    }
