"""Journey KPIs (conversion and revenue per recipient by journey and arm) from runs played
through `run_until`, segment and stage sizes from real refreshes, and goal progress."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from measure_data import Events, at
from sqlalchemy import select

from orbita.analytics.goals import TREND_WEEKS, goals_progress
from orbita.analytics.kpis import KpiOptions, compute_kpis, kpi_value
from orbita.core.clock import SimulatedClock
from orbita.model.events import EventRecord
from orbita.model.strategy import parse_strategy
from orbita.services.journeys import publish_journeys
from orbita.services.runner import run_until
from orbita.services.segments import refresh_segments
from orbita.services.workspace import Workspace
from orbita.store.state import attributions, journey_conversions, journey_runs, segment_refreshes

STRATEGY = """workspace: kpis
channels:
  hook: {type: webhook}
segments:
  buyers: {event: "Order Completed"}
  big: {event: "Order Completed", sum: {revenue: ">= 50"}}
stages:
  - {name: customer, segment: buyers}
  - name: visitor
    segment: {not: {segment: buyers}}
journeys:
  cart:
    trigger: {event: "Product Added"}
    goal: {event: "Order Completed", within: 2d}
    holdout: 30%
    steps:
      - send: {template: reminder, channel: hook}
goals:
  - {kpi: repeat_purchase_rate, target: 0.9, by: 2026-12-31, since: 2026-03-09}
  - {kpi: segment_size, segment: big, target: 5, by: 2026-04-01}
  - {kpi: conversion_rate, journey: cart, target: 0.2, by: 2026-12-31}
"""


def _played(workspace: Workspace) -> tuple[Events, datetime]:
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    rng = random.Random(4)
    events = Events()
    for number in range(60):
        user = f"p{number:02d}"
        added = at(days=rng.uniform(0, 20))
        events.add(user, "Product Added", added, {"cart_id": f"c{number}"})
        if rng.random() < 0.5:
            bought = added + timedelta(hours=rng.uniform(1, 60))
            events.add(user, "Order Completed", bought, {"revenue": rng.choice((20, 60))})
        if rng.random() < 0.3:
            events.add(user, "Order Completed", at(days=22 + number % 5), {"revenue": 30})
    start, until = at(days=-1), at(days=30)
    workspace.clock = SimulatedClock(start)
    journeys = publish_journeys(
        workspace=workspace, journeys=strategy.journeys, timezone=strategy.timezone
    ).journeys
    records = [
        EventRecord(
            message_id=e.message_id,
            type="track",
            name=e.name,
            user_id=e.user,
            anonymous_id=None,
            properties=e.properties,
            context={},
            timestamp=e.timestamp,
            received_at=e.timestamp,
        )
        for e in sorted(events.items, key=lambda e: e.timestamp)
    ]
    run_until(
        workspace=workspace,
        strategy=strategy,
        journeys=journeys,
        start=start,
        until=until,
        events=records,
        step=timedelta(hours=12),
        refresh_every=timedelta(days=7),
    )
    return events, until


def _week(moment: datetime) -> date:
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def test_journey_kpis_by_journey_and_arm(workspace: Workspace) -> None:
    _, until = _played(workspace)
    with workspace.state.connect() as connection:
        runs = connection.execute(
            select(journey_runs.c.run_id, journey_runs.c.holdout, journey_runs.c.entered_at)
        ).all()
        converted = set(connection.execute(select(journey_conversions.c.run_id)).scalars())
        revenue: dict[str, float] = defaultdict(float)
        for run_id, money in connection.execute(
            select(attributions.c.run_id, attributions.c.revenue)
        ):
            revenue[run_id] += money
    entered: dict[tuple[date, str], list[str]] = defaultdict(list)
    for run_id, holdout, entered_at in runs:
        entered[(_week(entered_at), "holdout" if holdout else "treatment")].append(run_id)
    assert {arm for _, arm in entered} == {"treatment", "holdout"}
    found = compute_kpis(
        events=workspace.events,
        state=workspace.state,
        start=at(days=-7),
        end=until,
        grain="week",
        metrics=["conversion_rate", "revenue_per_recipient"],
        dimensions=["journey", "arm", "variant"],
    )
    # The journey sends no A/B variant: the variant query runs and finds nothing.
    assert not [r for r in found if r.dimension == "variant"]
    measured = {(r.metric, r.period, r.dimension, r.key): r.value for r in found}
    expected = {}
    for (week, arm), ids in entered.items():
        rate = sum(1 for i in ids if i in converted) / len(ids)
        money = sum(revenue[i] for i in ids) / len(ids)
        expected[("conversion_rate", week, "arm", f"cart/{arm}")] = rate
        expected[("revenue_per_recipient", week, "arm", f"cart/{arm}")] = money
        if arm == "treatment":
            expected[("conversion_rate", week, "journey", "cart")] = rate
            expected[("revenue_per_recipient", week, "journey", "cart")] = money
    assert measured == pytest.approx(expected)
    assert any(value for (m, *_), value in expected.items() if m == "conversion_rate")


def test_segment_and_stage_sizes_carry_forward(embedded_workspace: Workspace) -> None:
    workspace = embedded_workspace
    _played(workspace)
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    for days in (35, 40):  # after the run's own weekly refreshes
        refresh_segments(workspace=workspace, strategy=strategy, as_of=at(days=days))
    with workspace.state.connect() as connection:
        history = connection.execute(
            select(segment_refreshes.c.segment, segment_refreshes.c.as_of, segment_refreshes.c.size)
        ).all()
    found = compute_kpis(
        events=workspace.events,
        state=workspace.state,
        start=at(days=14),
        end=at(days=49),
        grain="week",
        metrics=["segment_size", "stage_size"],
        dimensions=["segment", "stage"],
    )
    measured = {(r.metric, r.period, r.key): r.value for r in found}
    expected = {}
    for week in range(2, 7):
        monday = at(days=7 * week)
        for name, as_of, size in sorted(history, key=lambda row: row[1]):
            if as_of < monday + timedelta(days=7):
                metric = "stage_size" if name.startswith("stage:") else "segment_size"
                expected[(metric, monday.date(), name.removeprefix("stage:"))] = size
    assert measured == expected
    assert {key for _, _, key in measured} == {"buyers", "big", "customer", "visitor"}


def test_goal_progress_on_the_straight_path(embedded_workspace: Workspace) -> None:
    workspace = embedded_workspace
    _, until = _played(workspace)
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    refresh_segments(workspace=workspace, strategy=strategy, as_of=until)
    now = until + timedelta(days=1)
    progress = goals_progress(
        events=workspace.events, state=workspace.state, strategy=strategy, now=now
    )
    assert [g.kpi for g in progress] == ["repeat_purchase_rate", "segment_size", "conversion_rate"]
    options = KpiOptions(churn_days=90)
    for goal, found in zip(strategy.goals, progress, strict=True):
        dimension = {"segment_size": "segment", "conversion_rate": "journey"}.get(goal.kpi, "all")
        key = goal.segment or goal.journey or ""
        current = kpi_value(
            events=workspace.events,
            state=workspace.state,
            metric=goal.kpi,
            start=now - timedelta(days=28),
            end=now,
            dimension=dimension,
            key=key,
            options=options,
        )
        assert current is not None and found.current == current.value
        assert len(found.trend) == TREND_WEEKS + 1
    repeat = progress[0]
    since = datetime(2026, 3, 9, tzinfo=UTC)
    baseline = kpi_value(
        events=workspace.events,
        state=workspace.state,
        metric="repeat_purchase_rate",
        start=since - timedelta(days=28),
        end=since,
    )
    assert baseline is not None and repeat.baseline == baseline.value
    assert repeat.baseline is not None and repeat.current is not None
    share = (now - since) / (datetime(2026, 12, 31, tzinfo=UTC) - since)
    assert repeat.expected == pytest.approx(repeat.baseline + (0.9 - repeat.baseline) * share)
    expected_status = "on_track" if repeat.current >= repeat.expected else "behind"
    assert repeat.status == expected_status
    big = progress[1]
    # The segment goal's date has passed: met or missed, nothing in between.
    assert big.status == ("met" if (big.current or 0) >= 5 else "missed")
