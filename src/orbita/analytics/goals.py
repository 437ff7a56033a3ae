"""Goals of the strategy tracked: where each KPI stands against its target, and its trend.

For a goal {kpi, target, by, since}:
    current    the KPI over the last CURRENT_WINDOW (28 days) before now (KPIs measured "to
               date", such as repeat_purchase_rate, are as of now)
    baseline   the KPI over the same length of time before `since` (default: twelve weeks
               before now)
    expected   the straight line from (since, baseline) to (by, target), read at now
    fraction   (current - baseline) / (target - baseline): the share of the way covered
    status     met (the target is reached), on_track (at or past the line), behind,
               missed (`by` has passed unmet), in_progress (no baseline to draw the line
               from), no_data (no current value)
    trend      the KPI per week over the last TREND_WEEKS weeks

A goal naming a journey measures the KPI of that journey (by `journey`); one naming a segment
or stage, that segment's size; any other goal measures the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from orbita.analytics.kpis import CATALOGUE, KpiOptions, compute_kpis, kpi_value, options_for
from orbita.analytics.periods import utc
from orbita.model.goals import Goal
from orbita.model.strategy import Strategy
from orbita.store.events.base import EventStore

CURRENT_WINDOW = timedelta(days=28)
TREND_WEEKS = 12


@dataclass(frozen=True, slots=True)
class TrendPoint:
    week: date
    value: float | None


@dataclass(frozen=True, slots=True)
class GoalProgress:
    kpi: str
    target: float
    by: date
    since: date
    journey: str | None
    segment: str | None
    description: str
    current: float | None
    baseline: float | None
    expected: float | None
    fraction: float | None
    status: str  # met | on_track | behind | missed | in_progress | no_data
    trend: tuple[TrendPoint, ...]


def goal_scope(goal: Goal) -> tuple[str, str]:
    """The (dimension, key) a goal's KPI is read at."""
    dimensions = CATALOGUE[goal.kpi].dimensions
    if goal.kpi == "stage_size":
        return "stage", goal.segment or ""
    if goal.kpi == "segment_size":
        return "segment", goal.segment or ""
    if goal.journey is not None and "journey" in dimensions:
        return "journey", goal.journey
    return "all", ""


def goals_progress(
    *,
    events: EventStore,
    state: Engine,
    strategy: Strategy,
    now: datetime,
    options: KpiOptions | None = None,
) -> list[GoalProgress]:
    """Every goal of the strategy, in the order written."""
    now = utc(now, field="now")
    chosen = options or options_for(strategy)
    return [
        _progress(goal, events=events, state=state, now=now, options=chosen)
        for goal in strategy.goals
    ]


def _progress(
    goal: Goal, *, events: EventStore, state: Engine, now: datetime, options: KpiOptions
) -> GoalProgress:
    dimension, key = goal_scope(goal)
    since_day = goal.since or (now - timedelta(weeks=TREND_WEEKS)).date()
    since = datetime(since_day.year, since_day.month, since_day.day, tzinfo=UTC)

    def value(start: datetime, end: datetime) -> float | None:
        row = kpi_value(
            events=events,
            state=state,
            metric=goal.kpi,
            start=start,
            end=end,
            dimension=dimension,
            key=key,
            options=options,
        )
        return row.value if row is not None else None

    current = value(now - CURRENT_WINDOW, now)
    baseline = value(since - CURRENT_WINDOW, since) if since < now else None
    trend_rows = compute_kpis(
        events=events,
        state=state,
        start=now - timedelta(weeks=TREND_WEEKS),
        end=now,
        grain="week",
        metrics=[goal.kpi],
        dimensions=[dimension],
        options=options,
    )
    by_week = {row.period: row.value for row in trend_rows if row.key == key}
    monday = (now - timedelta(weeks=TREND_WEEKS)).date()
    monday -= timedelta(days=monday.weekday())
    weeks = [monday + timedelta(weeks=n) for n in range(TREND_WEEKS + 1)]
    trend = tuple(TrendPoint(week, by_week.get(week)) for week in weeks if week <= now.date())
    higher = _higher_is_better(goal, baseline)
    expected = _expected(goal, baseline=baseline, since=since, now=now)
    fraction = None
    if current is not None and baseline is not None and goal.target != baseline:
        fraction = (current - baseline) / (goal.target - baseline)
    return GoalProgress(
        kpi=goal.kpi,
        target=goal.target,
        by=goal.by,
        since=since_day,
        journey=goal.journey,
        segment=goal.segment,
        description=goal.description,
        current=current,
        baseline=baseline,
        expected=expected,
        fraction=fraction,
        status=_status(goal, current=current, expected=expected, higher=higher, now=now),
        trend=trend,
    )


def _higher_is_better(goal: Goal, baseline: float | None) -> bool:
    """The way the goal points: from the baseline to the target when they differ, else the
    KPI's own sense (a lower churn rate is better)."""
    if baseline is not None and baseline != goal.target:
        return goal.target > baseline
    return CATALOGUE[goal.kpi].higher_is_better


def _expected(
    goal: Goal, *, baseline: float | None, since: datetime, now: datetime
) -> float | None:
    if baseline is None:
        return None
    by = datetime(goal.by.year, goal.by.month, goal.by.day, tzinfo=UTC)
    share = min(1.0, max(0.0, (now - since) / (by - since)))
    return baseline + (goal.target - baseline) * share


def _status(
    goal: Goal, *, current: float | None, expected: float | None, higher: bool, now: datetime
) -> str:
    if current is None:
        return "no_data"

    def reached(value: float, mark: float) -> bool:
        return value >= mark if higher else value <= mark

    if reached(current, goal.target):
        return "met"
    if now.date() > goal.by:
        return "missed"
    if expected is None:
        return "in_progress"
    if reached(current, expected):
        return "on_track"
    return "behind"
