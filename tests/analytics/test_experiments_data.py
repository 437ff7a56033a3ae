"""Experiments read from a workspace where a journey with a holdout and an A/B split has
run: arms, conversions, goal revenue and guardrail events per arm match what the test's own
events say for the customers each arm holds; the daily looks end at the totals."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from orbita.analytics.experiments.data import read_experiments
from orbita.analytics.experiments.report import (
    experiments_report,
    holdout_uplift,
    journey_uplifts,
    uplift_lines,
    uplift_plain,
    uplift_summary,
)
from orbita.core.clock import SimulatedClock
from orbita.core.errors import NotFoundError
from orbita.model.events import EventRecord
from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.services.journey_stats import journey_stats
from orbita.services.runner import run_until
from orbita.services.workspace import Workspace
from orbita.store.state import customers, journey_runs, journey_steps

STRATEGY = """\
workspace: shop
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  hello: {channel: email, subject: "Hello", text: "Welcome!", variants: {B: {subject: "Hi"}}}
journeys:
  welcome:
    trigger: {event: "Signed Up"}
    entry: once
    holdout: 30%
    goal: {event: "Order Completed", within: 7d}
    steps:
      - split:
          - {name: A, percent: 50%, then: [{send: hello}]}
          - {name: B, percent: 50%, then: [{send: hello}]}
"""
START = datetime(2026, 3, 1, tzinfo=UTC)
PEOPLE = 240


@dataclass(frozen=True)
class Person:
    user: str
    signed_up: datetime
    order: tuple[datetime, float] | None  # the first order after signing up
    unsubscribed: datetime | None
    complained: datetime | None

    def converted(self) -> bool:
        return self.order is not None and self.order[0] <= self.signed_up + timedelta(days=7)


def _people() -> list[Person]:
    rng = random.Random(6)
    people = []
    for i in range(PEOPLE):
        signed_up = START + timedelta(days=i % 10, hours=9, minutes=i % 50)
        # Orders well inside or well outside the 7-day window (none on its edge).
        hours = rng.choice([rng.randint(2, 150), rng.randint(180, 260)])
        order = (signed_up + timedelta(hours=hours), round(rng.uniform(10, 200), 2))
        unsubscribed = signed_up + timedelta(days=rng.choice([1, 9])) if i % 7 == 0 else None
        complained = signed_up + timedelta(hours=5) if i % 23 == 0 else None
        people.append(
            Person(f"u{i}", signed_up, order if rng.random() < 0.4 else None, unsubscribed,
                   complained)
        )  # fmt: skip
    return people


def _event(user: str, name: str, at: datetime, key: str, **properties: Any) -> EventRecord:
    return EventRecord(
        message_id=key,
        type="track",
        name=name,
        user_id=user,
        anonymous_id=None,
        properties=properties,
        context={},
        timestamp=at,
        received_at=at,
    )


def run_shop(workspace: Workspace) -> list[Person]:
    """Apply the strategy and play three weeks of the people's events through it."""
    people = _people()
    records = []
    for p in people:
        records.append(_event(p.user, "Signed Up", p.signed_up, f"s-{p.user}"))
        # An order before signing up converts nothing.
        records.append(
            _event(p.user, "Order Completed", p.signed_up - timedelta(hours=3), f"early-{p.user}",
                   revenue=999)
        )  # fmt: skip
        if p.order is not None:
            records.append(
                _event(p.user, "Order Completed", p.order[0], f"o-{p.user}", revenue=p.order[1])
            )
        if p.unsubscribed is not None:
            records.append(_event(p.user, "Unsubscribed", p.unsubscribed, f"u-{p.user}"))
        if p.complained is not None:
            records.append(_event(p.user, "Email Marked as Spam", p.complained, f"c-{p.user}"))
    records.sort(key=lambda r: r.timestamp)
    strategy = parse_strategy(STRATEGY, source="test")
    workspace.clock = SimulatedClock(START)
    applied = apply_strategy(workspace=workspace, strategy=strategy, content=STRATEGY, source="t")
    assert applied.journeys is not None
    run_until(
        workspace=workspace,
        strategy=strategy,
        journeys=applied.journeys,
        start=START,
        until=START + timedelta(days=21),
        events=[r for r in records if r.timestamp > START],
        step=timedelta(hours=6),
    )
    return people


def _arms(workspace: Workspace) -> dict[str, dict[str, str]]:
    """Per user: the holdout arm and split arm the journeys assigned (read from the runs)."""
    with workspace.state.connect() as connection:
        users = dict(connection.execute(select(customers.c.customer_id, customers.c.user_id)).all())
        holdout = {
            users[c]: ("holdout" if h else "treatment")
            for c, h in connection.execute(
                select(journey_runs.c.customer_id, journey_runs.c.holdout)
            )
        }
        split = {
            users[c]: edge
            for c, edge in connection.execute(
                select(journey_runs.c.customer_id, journey_steps.c.edge)
                .join(journey_steps, journey_steps.c.run_id == journey_runs.c.run_id)
                .where(journey_steps.c.node == "steps.0")
            )
        }
    return {"holdout": holdout, "split": split}


def _expected(people: list[Person], members: set[str]) -> dict[str, float]:
    chosen = [p for p in people if p.user in members]

    def window(p: Person, at: datetime | None) -> bool:
        return at is not None and p.signed_up <= at <= p.signed_up + timedelta(days=7)

    return {
        "n": len(chosen),
        "conversions": sum(p.converted() for p in chosen),
        "revenue": round(sum(p.order[1] for p in chosen if p.converted() and p.order), 2),
        "unsubscribes": sum(window(p, p.unsubscribed) for p in chosen),
        "complaints": sum(window(p, p.complained) for p in chosen),
    }


def test_experiments_match_the_events_per_arm(workspace: Workspace) -> None:
    people = run_shop(workspace)
    arms = _arms(workspace)
    found = read_experiments(state=workspace.state, events=workspace.events)
    assert [(e.journey, e.kind, e.name) for e in found] == [
        ("welcome", "holdout", "holdout"),
        ("welcome", "split", "steps.0"),
    ]  # the variants are the split's arms: no third experiment
    holdout, split = found
    assert holdout.result.control == "holdout" and split.result.control == "A"
    for experiment, assigned, names in (
        (holdout, arms["holdout"], ("holdout", "treatment")),
        (split, arms["split"], ("A", "B")),
    ):
        for name in names:
            members = {user for user, arm in assigned.items() if arm == name}
            if experiment is split:  # the split compares sent arms: holdout runs left out
                members -= {u for u, arm in arms["holdout"].items() if arm == "holdout"}
            arm = experiment.result.arm(name)
            expected = _expected(people, members)
            assert arm.n == expected["n"] > 0
            assert arm.conversions == expected["conversions"]
            assert round(arm.revenue, 2) == expected["revenue"]
            assert arm.unsubscribes == expected["unsubscribes"]
            assert arm.complaints == expected["complaints"]
    # The same counts as `orbita journeys stats`, by its own aggregate queries.
    stats = journey_stats(workspace=workspace, name="welcome")
    for name in ("holdout", "treatment"):
        assert holdout.result.arm(name).n == stats.arms[name].entered
        assert holdout.result.arm(name).conversions == stats.arms[name].converted
    for name in ("A", "B"):
        assert split.result.arm(name).n == stats.variants[name].entered
    # Daily looks from the first signup, the last at the totals.
    gaps = {b - a for a, b in zip(holdout.looks[:-2], holdout.looks[1:-1], strict=True)}
    assert gaps == {timedelta(days=1)} and len(holdout.looks) >= 10
    last = holdout.timeline["treatment"][-1]
    assert last.n == sum(a.n for a in holdout.result.arms)
    assert last.p_value == holdout.result.comparison("treatment").sequential.p_value
    assert holdout.result.sample_ratio is not None
    assert not holdout.result.sample_ratio.mismatch
    assert split.shares == (0.5, 0.5)


def test_uplift_report_and_lines(embedded_workspace: Workspace) -> None:
    run_shop(embedded_workspace)
    (uplift,) = journey_uplifts(state=embedded_workspace.state, events=embedded_workspace.events)
    (holdout,) = [
        e
        for e in read_experiments(
            state=embedded_workspace.state, events=embedded_workspace.events, journeys=["welcome"]
        )
        if e.kind == "holdout"
    ]
    assert holdout_uplift(holdout) == uplift
    treated = holdout.result.arm("treatment")
    assert uplift.incremental_conversions == pytest.approx(uplift.uplift * treated.n)
    assert uplift.incremental_conversions_interval.low == pytest.approx(
        uplift.interval.low * treated.n
    )
    assert uplift.interval.contains(uplift.uplift)
    header, line = uplift_lines([uplift_plain(uplift)])
    assert header.startswith("journey  uplift, pp [95% CI]")
    low, high = uplift.interval.low * 100, uplift.interval.high * 100
    assert line.startswith(f"welcome  {uplift.uplift * 100:+.1f} [{low:+.1f}, {high:+.1f}]")
    assert max(map(len, (header, line))) <= 80
    assert uplift_summary(state=embedded_workspace.state, events=embedded_workspace.events) == [
        header,
        line,
    ]
    report = experiments_report(
        state=embedded_workspace.state, events=embedded_workspace.events, timeline=True
    )
    assert {row["arm"] for e in report["experiments"] for row in e["arms"]} == {
        "holdout", "treatment", "A", "B"
    }  # fmt: skip
    assert report["uplift"][0]["journey"] == "welcome"
    assert report["experiments"][0]["timeline"][-1]["n"] == sum(
        row["n"] for row in report["experiments"][0]["arms"]
    )
    with pytest.raises(NotFoundError, match="unknown journey 'nope'"):
        read_experiments(
            state=embedded_workspace.state, events=embedded_workspace.events, journeys=["nope"]
        )
