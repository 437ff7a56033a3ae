"""Cohort triangles computed in the event store (DuckDB and PostgreSQL) against a plain-Python
reading of the definitions in orbita.analytics.cohorts."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from measure_data import Event, Events, at

from orbita.analytics.cohorts import CohortRow, compute_cohorts
from orbita.core.errors import UserError
from orbita.services.segments import sync_customer_snapshot
from orbita.services.workspace import Workspace

EPOCH = datetime(2000, 1, 3, tzinfo=UTC)


def shop(seed: int) -> tuple[Events, dict[str, str]]:
    rng = random.Random(seed)
    events = Events()
    channels = {}
    for number in range(40):
        user = f"k{number:02d}"
        if number % 5:
            channels[user] = rng.choice(("ads", "seo"))
            events.identify(user, at(days=-60), acquisition_channel=channels[user])
        for _ in range(rng.randint(0, 7)):
            source = rng.choice(("mail", "web", None))
            props = {"revenue": rng.choice((15, 40.5))} | ({"source": source} if source else {})
            events.add(user, "Order Completed", at(days=rng.uniform(-40, 120)), props)
        for _ in range(rng.randint(0, 3)):
            events.add(user, "Product Viewed", at(days=rng.uniform(-40, 120)))
    return events, channels


def number(moment: datetime, grain: str) -> int:
    if grain == "month":
        return moment.year * 12 + moment.month - 1
    days = (moment.date() - EPOCH.date()).days
    return days // 7 if grain == "week" else days


def label_of(moment: datetime, grain: str) -> str:
    day = moment.date()
    if grain == "month":
        return day.replace(day=1).isoformat()
    if grain == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    return day.isoformat()


def reference(
    events: list[Event],
    *,
    start: datetime,
    end: datetime,
    grain: str,
    by: str,
    channels: dict[str, str],
    activity: str = "Order Completed",
) -> list[tuple[str, int, int, int, float | None, float]]:
    tracks = sorted(
        (e for e in events if e.kind == "track" and e.timestamp < end),
        key=lambda e: (e.timestamp, e.message_id),
    )
    first: dict[str, Event] = {}
    for e in tracks:
        if e.name == "Order Completed" and e.user not in first:
            first[e.user] = e
    people = {u: e for u, e in first.items() if e.timestamp >= start}

    def label(user: str) -> str:
        e = people[user]
        if by == "period":
            return label_of(e.timestamp, grain)
        if by.startswith("property:"):
            return str(e.properties.get(by.split(":")[1], "(none)"))
        return channels.get(user, "(none)")

    last = number(end - timedelta(microseconds=1), grain)
    cohorts: dict[str, dict[str, int]] = defaultdict(dict)
    for user, e in people.items():
        cohorts[label(user)][user] = number(e.timestamp, grain)
    rows = []
    for cohort, members in sorted(cohorts.items()):
        for p in range(last - min(members.values()) + 1):
            observed = [u for u, a in members.items() if a + p <= last]
            acts = [
                e
                for e in tracks
                if e.name == activity
                and e.user in members
                and start <= e.timestamp
                and number(e.timestamp, grain) - members[e.user] == p
            ]
            revenue = sum(float(e.properties.get("revenue", 0)) for e in acts)
            active = len({e.user for e in acts})
            rows.append(
                (
                    cohort,
                    p,
                    len(observed),
                    active,
                    active / len(observed) if observed else None,
                    revenue,
                )
            )
    return rows


Row = tuple[str, int, int, int, float | None, float]


def rounded(rows: list[Row]) -> list[Row]:
    return [
        (c, p, n, a, None if r is None else round(r, 9), round(m, 6)) for c, p, n, a, r, m in rows
    ]


def measured(rows: list[CohortRow]) -> list[Row]:
    return rounded(
        [(r.cohort, r.period, r.customers, r.active, r.retention, r.revenue) for r in rows]
    )


@pytest.mark.parametrize("grain", ["month", "week"])
def test_cohorts_match_the_reference(workspace: Workspace, grain: str) -> None:
    events, channels = shop(8)
    events.store(workspace)
    sync_customer_snapshot(workspace=workspace)
    start, end = at(days=-10), at(days=95, hours=5)
    for by in ("period", "trait:acquisition_channel", "property:source"):
        rows = compute_cohorts(
            events=workspace.events,
            start=start,
            end=end,
            grain=grain,
            by=by,  # type: ignore[arg-type]
        )
        expected = reference(
            events.items, start=start, end=end, grain=grain, by=by, channels=channels
        )
        assert measured(rows) == rounded(expected), by
        assert any(r.period > 0 and r.active for r in rows)
    # Cumulative revenue per customer adds up the periods of each cohort.
    for cohort in {r.cohort for r in rows}:
        mine = [r for r in rows if r.cohort == cohort]
        total = 0.0
        for r in mine:
            total += r.revenue_per_customer or 0.0
            assert r.cumulative_revenue_per_customer == pytest.approx(total)


def test_views_as_activity_and_bad_input(embedded_workspace: Workspace) -> None:
    events, channels = shop(2)
    events.store(embedded_workspace)
    start, end = at(), at(days=60)
    rows = compute_cohorts(
        events=embedded_workspace.events,
        start=start,
        end=end,
        grain="day",
        activity="Product Viewed",
    )
    expected = reference(
        events.items,
        start=start,
        end=end,
        grain="day",
        by="period",
        channels=channels,
        activity="Product Viewed",
    )
    assert measured(rows) == rounded(expected)
    with pytest.raises(UserError, match=r"^by: "):
        compute_cohorts(events=embedded_workspace.events, start=start, end=end, by="colour")
    with pytest.raises(UserError, match=r"^period: "):
        compute_cohorts(events=embedded_workspace.events, start=start, end=end, grain="total")
