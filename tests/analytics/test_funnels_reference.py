"""Funnels computed in the event store (DuckDB and PostgreSQL) against a straightforward
pure-Python reading of the definitions in orbita.analytics.funnels, on random events with
many ties, and on hand-written edge cases."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from measure_data import Event, Events, at, random_events

from orbita.analytics.funnels import ALL, FunnelStepRow, compute_funnel
from orbita.core.errors import UserError
from orbita.engine.journeys.predicates import compile_where
from orbita.model.funnels import Funnel
from orbita.services.workspace import Workspace


def reference(
    events: Sequence[Event],
    funnel: Funnel,
    *,
    start: datetime,
    end: datetime,
    labels: dict[str, str] | None = None,
) -> dict[str, list[tuple[int, float | None]]]:
    """Per group: (customers, median seconds from the previous step) of each step."""
    steps = funnel.steps
    wheres = [compile_where(step.where) for step in steps]
    window = funnel.within

    def matches(k: int, e: Event) -> bool:
        step = steps[k]
        return e.kind == step.message_type and e.name == step.event and wheres[k](e.properties, end)

    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if start <= e.timestamp <= end + window and any(matches(k, e) for k in range(len(steps))):
            by_user[e.user].append(e)
    best: dict[str, list[datetime]] = {}
    for user, mine in by_user.items():

        def first_step(e: Event) -> int:
            return next(k for k in range(len(steps)) if matches(k, e))

        mine.sort(key=lambda e: (e.timestamp, first_step(e), e.message_id))
        deepest: list[datetime] = []
        for i, e in enumerate(mine):
            if not (matches(0, e) and start <= e.timestamp < end):
                continue
            chain, times = i, [e.timestamp]
            for k in range(1, len(steps)):
                later = range(chain + 1, len(mine) if funnel.order == "loose" else chain + 2)
                nxt = next((j for j in later if j < len(mine) and matches(k, mine[j])), None)
                if nxt is None or mine[nxt].timestamp > e.timestamp + window:
                    break
                chain = nxt
                times.append(mine[nxt].timestamp)
            if len(times) > len(deepest):
                deepest = times
        if deepest:
            best[user] = deepest
    groups: dict[str, dict[str, list[datetime]]] = {ALL: best}
    if labels is not None:
        for user, times in best.items():
            groups.setdefault(labels.get(user, "(none)"), {})[user] = times
    result = {}
    for group, members in groups.items():
        per_step: list[tuple[int, float | None]] = []
        for k in range(len(steps)):
            reached = [t for t in members.values() if len(t) > k]
            gaps = [(t[k] - t[k - 1]).total_seconds() for t in reached] if k else []
            per_step.append((len(reached), statistics.median(gaps) if gaps else None))
        result[group] = per_step
    return result


def measured(rows: Sequence[FunnelStepRow]) -> dict[str, list[tuple[int, float | None]]]:
    found: dict[str, list[tuple[int, float | None]]] = defaultdict(list)
    for row in rows:
        found[row.group].append((row.customers, row.median_seconds))
    return dict(found)


def funnel(steps: list[Any], *, within: str = "2d", order: str = "loose") -> Funnel:
    return Funnel.model_validate({"steps": steps, "within": within, "order": order})


FUNNELS = {
    "three": ["A", "B", "C"],
    "repeated": ["A", "A", "B"],
    "filtered": ["A", {"event": "B", "where": {"x": 1}}, "C"],
    "same_step_twice_filtered": [{"event": "A", "where": {"x": 2}}, "A", "A"],
    "five": ["A", "B", "A", "C", "B"],
}


@pytest.mark.parametrize("order", ["loose", "strict"])
def test_random_events_match_the_reference(workspace: Workspace, order: str) -> None:
    events = random_events(3, customers=60, names=("A", "B", "C", "D"), days=12, per_customer=14)
    events.store(workspace)
    start, end = at(days=1), at(days=9)
    for within in ("6h", "2d"):
        for name, steps in FUNNELS.items():
            chosen = funnel(steps, within=within, order=order)
            result = compute_funnel(
                events=workspace.events, funnel=chosen, name=name, start=start, end=end
            )
            expected = reference(events.tracks(), chosen, start=start, end=end)
            assert measured(result.rows) == expected, (name, within)
            first = expected[ALL][0][0]
            assert first > 0
            for row in result.rows:
                if row.step > 1:
                    previous = expected[ALL][row.step - 2][0]
                    assert row.from_previous == (row.customers / previous if previous else None)
                    assert row.from_first == row.customers / first


def test_ties_repeats_and_the_window_boundary(workspace: Workspace) -> None:
    events = Events()
    # Same instant: the click counts after the delivery (funnel order), not by message id.
    events.add("tie", "B", at(hours=1))
    events.add("tie", "A", at(hours=1))
    # A repeated step needs a second event: one purchase is not two.
    events.add("once", "A", at(hours=2))
    events.add("once", "B", at(hours=3))
    events.add("twice", "A", at(hours=2))
    events.add("twice", "B", at(hours=3))
    events.add("twice", "B", at(hours=3))
    # Exactly at the end of the window counts; a microsecond later does not.
    events.add("edge", "A", at(hours=4))
    events.add("edge", "B", at(hours=4 + 6))
    events.add("late", "A", at(hours=4))
    events.add("late", "B", at(hours=4 + 6) + timedelta(microseconds=1))
    events.store(workspace)
    start, end = at(), at(days=1)

    two = funnel(["A", "B"], within="6h")
    rows = compute_funnel(events=workspace.events, funnel=two, name="t", start=start, end=end).rows
    assert [(r.customers, r.median_seconds) for r in rows] == [(5, None), (4, 3600.0)]

    repeat = funnel(["A", "B", "B"], within="6h")
    rows = compute_funnel(
        events=workspace.events, funnel=repeat, name="r", start=start, end=end
    ).rows
    assert [r.customers for r in rows] == [5, 4, 1]
    assert rows[2].median_seconds == 0.0  # the two purchases at the same instant
    assert measured(rows) == reference(events.tracks(), repeat, start=start, end=end)


def test_strict_order_breaks_on_another_funnel_event(workspace: Workspace) -> None:
    events = Events()
    events.add("gap", "A", at(hours=1))
    events.add("gap", "C", at(hours=2))  # a step of the funnel, out of place
    events.add("gap", "B", at(hours=3))
    events.add("gap", "C", at(hours=4))
    events.add("noise", "A", at(hours=1))
    events.add("noise", "Z", at(hours=2))  # no step of the funnel: ignored
    events.add("noise", "B", at(hours=3))
    events.add("noise", "C", at(hours=4))
    events.store(workspace)
    start, end = at(), at(days=1)
    loose = funnel(["A", "B", "C"])
    strict = funnel(["A", "B", "C"], order="strict")
    for chosen, reached in ((loose, [2, 2, 2]), (strict, [2, 1, 1])):
        rows = compute_funnel(
            events=workspace.events, funnel=chosen, name="s", start=start, end=end
        ).rows
        assert [r.customers for r in rows] == reached
        assert measured(rows) == reference(events.tracks(), chosen, start=start, end=end)


def test_breakdown_by_trait_and_by_segment(workspace: Workspace) -> None:
    from orbita.model.strategy import parse_strategy
    from orbita.services.segments import refresh_segments, sync_customer_snapshot

    events = random_events(11, customers=40, names=("A", "B", "C"), days=6, per_customer=10)
    countries = {}
    for number in range(40):
        user = f"u{number:03d}"
        countries[user] = ("UA", "PL", "DE")[number % 3]
        if number % 7 == 0:
            continue  # no country: (none)
        events.identify(user, at(), country=countries[user])
    for number in range(40):
        if number % 7 == 0:
            countries.pop(f"u{number:03d}")
    events.store(workspace)
    sync_customer_snapshot(workspace=workspace)
    start, end = at(), at(days=6)
    chosen = funnel(["A", "B", "C"], within="1d")
    result = compute_funnel(
        events=workspace.events,
        funnel=chosen,
        name="b",
        start=start,
        end=end,
        breakdown="trait:country",
    )
    expected = reference(events.tracks(), chosen, start=start, end=end, labels=countries)
    assert measured(result.rows) == expected
    assert set(expected) - {ALL} == {"UA", "PL", "DE", "(none)"}

    strategy = parse_strategy(
        "workspace: t\nsegments:\n"
        "  clickers: {event: C, count: '>= 2'}\n"
        "  buyers: {event: B, count: '>= 3'}\n",
        source="strategy.yaml",
    )
    refresh_segments(workspace=workspace, strategy=strategy, as_of=end)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events.tracks():
        if e.timestamp <= end:
            counts[e.user][e.name] += 1
    labels = {
        user: "clickers" if n["C"] >= 2 else "buyers" if n["B"] >= 3 else "(other)"
        for user, n in counts.items()
    }
    result = compute_funnel(
        events=workspace.events,
        funnel=chosen,
        name="b",
        start=start,
        end=end,
        breakdown="segment:clickers,buyers",
    )
    expected = reference(events.tracks(), chosen, start=start, end=end, labels=labels)
    assert measured(result.rows) == expected


def test_bad_breakdown_and_range_name_the_field(embedded_workspace: Workspace) -> None:
    chosen = funnel(["A", "B"])
    with pytest.raises(UserError, match=r"^by: "):
        compute_funnel(
            events=embedded_workspace.events,
            funnel=chosen,
            name="x",
            start=at(),
            end=at(days=1),
            breakdown="colour",
        )
    with pytest.raises(UserError, match=r"^end: "):
        compute_funnel(
            events=embedded_workspace.events, funnel=chosen, name="x", start=at(), end=at()
        )
