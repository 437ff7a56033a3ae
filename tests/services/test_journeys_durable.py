"""Durable journeys on both backends: real events in through `store_records`, a moving
clock, and the outbox, steps and conversions as the rows say."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from orbita.core.errors import UserError
from orbita.engine.journeys.run import in_holdout
from orbita.model.events import EventRecord
from orbita.model.journeys import parse_journey
from orbita.model.messages import parse_batch
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    AdvanceReport,
    CustomerEvent,
    EventsReport,
    PublishedJourneys,
    advance_due,
    enter_from_events,
    handle_events,
    match_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.journeys import _bulk_insert as bulk_insert
from orbita.services.workspace import Workspace
from orbita.store.state import journey_conversions, journey_runs, journey_steps, outbox

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# DESIGN.md's abandoned cart, with the sms_nudge step its wait_for names.
ABANDONED_CART = {
    "trigger": {"event": "Product Added"},
    "entry": {"cooldown": "7d"},
    "exit_on": [{"event": "Order Completed"}],
    "goal": {"event": "Order Completed", "within": "7d"},
    "holdout": "10%",
    "steps": [
        {"wait": "1h"},
        {"send": "cart_reminder"},
        {"wait_for": {"event": "Email Clicked", "timeout": "2d", "on_timeout": "sms_nudge"}},
        {"id": "sms_nudge", "send": {"template": "cart_sms", "channel": "sms"}},
    ],
}


def publish(workspace: Workspace, spec: dict[str, Any] = ABANDONED_CART) -> PublishedJourneys:
    journey = parse_journey(spec, name="abandoned_cart")
    return publish_journeys(workspace=workspace, journeys={"abandoned_cart": journey}).journeys


def track(user: str, event: str, at: datetime, message_id: str, **props: Any) -> EventRecord:
    message = {
        "type": "track",
        "userId": user,
        "event": event,
        "messageId": message_id,
        "timestamp": at.isoformat(),
        "properties": props,
    }
    return parse_batch({"batch": [message]}, received_at=at)[0]


def ingest(
    workspace: Workspace, journeys: PublishedJourneys, records: Sequence[EventRecord]
) -> EventsReport:
    """What the API's ingest path does: store, resolve, play through the journeys."""
    store_records(workspace=workspace, records=records)
    events = resolve_customers(workspace=workspace, records=records)
    return handle_events(workspace=workspace, journeys=journeys, events=events)


def table_counts(workspace: Workspace) -> dict[str, int]:
    with workspace.state.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (journey_runs, outbox, journey_steps, journey_conversions)
        }


def test_abandoned_cart_with_a_moving_clock(workspace: Workspace) -> None:
    journeys = publish(workspace)
    users = [f"u{i}" for i in range(1, 31)]
    idle, clickers, buyers = users[:10], users[10:20], users[20:]
    timeline: list[EventRecord] = [
        track(user, "Product Added", T0 + timedelta(minutes=i), f"add-{user}", cart_id=user)
        for i, user in enumerate(users)
    ]
    timeline += [
        track(user, "Order Completed", T0 + timedelta(minutes=40), f"buy-{user}") for user in buyers
    ]
    timeline += [track(user, "Email Clicked", T0 + 3 * HOUR, f"click-{user}") for user in clickers]
    # The clock moves in 25-minute ticks; each event arrives when the clock reaches it.
    end = T0 + timedelta(days=4)
    ticks = [T0 + timedelta(minutes=25 * n) for n in range(int((end - T0) / timedelta(minutes=25)))]
    pending = sorted(timeline, key=lambda r: r.timestamp)
    for tick in ticks:
        while pending and pending[0].timestamp <= tick:
            now = pending[0].timestamp
            advance_due(workspace=workspace, journeys=journeys, now=now - timedelta(microseconds=1))
            batch = [r for r in pending if r.timestamp == now]
            pending = pending[len(batch) :]
            ingest(workspace, journeys, batch)
        advance_due(workspace=workspace, journeys=journeys, now=tick, limit=7)
    assert not pending

    ids = {
        e.record.user_id: e.customer_id
        for e in resolve_customers(
            workspace=workspace, records=[track(u, "x", T0, f"probe-{u}") for u in users]
        )
    }
    journey = journeys.current["abandoned_cart"]
    held = {user for user in users if in_holdout(journey, ids[user])}
    assert held and held != set(users), "the 10% holdout should hold some of 30, not all"

    def minute(i: int) -> timedelta:
        return timedelta(minutes=i)

    expected: set[tuple[Any, ...]] = set()
    for i, user in enumerate(users):
        kind = "suppressed" if user in held else "send"
        entered = T0 + minute(i)
        if user in buyers:
            continue  # bought 40 minutes in: before the reminder
        expected.add((ids[user], kind, "cart_reminder", None, entered + HOUR))
        sms_at = T0 + 3 * HOUR if user in clickers else entered + HOUR + timedelta(days=2)
        expected.add((ids[user], kind, "cart_sms", "sms", sms_at))
    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(
                outbox.c.customer_id,
                outbox.c.kind,
                outbox.c.template,
                outbox.c.channel,
                outbox.c.created_at,
                outbox.c.status,
            )
        ).all()
        runs = {
            row.customer_id: row
            for row in connection.execute(
                select(
                    journey_runs.c.customer_id, journey_runs.c.status, journey_runs.c.exit_reason
                )
            )
        }
        conversions = connection.execute(
            select(journey_conversions.c.customer_id, journey_conversions.c.arm)
        ).all()
    assert len(rows) == len(expected), "one outbox row per decision, none twice"
    assert {tuple(row[:5]) for row in rows} == expected
    assert {row.status for row in rows if row.kind == "send"} == {"queued"}
    assert {row.status for row in rows if row.kind == "suppressed"} <= {"skipped"}
    for user in buyers:
        assert runs[ids[user]].status == "exited"
        assert runs[ids[user]].exit_reason == "exit_on Order Completed"
    for user in idle + clickers:
        assert runs[ids[user]].status == "completed"
    assert sorted(conversions) == sorted(
        (ids[u], "holdout" if u in held else "treatment") for u in buyers
    )

    # The same `now` again, and the same events again: nothing new is written.
    before = table_counts(workspace)
    report = advance_due(workspace=workspace, journeys=journeys, now=ticks[-1])
    assert report == AdvanceReport(
        claimed=0, batches=0, messages=0, suppressed=0, conversions=0, ended=0
    )
    replay = ingest(workspace, journeys, timeline[:5])
    assert replay.entered == 0
    assert table_counts(workspace) == before


def test_publishing_the_same_definition_keeps_its_version(workspace: Workspace) -> None:
    journey = parse_journey(ABANDONED_CART, name="abandoned_cart")
    first = publish_journeys(workspace=workspace, journeys={"abandoned_cart": journey})
    again = publish_journeys(workspace=workspace, journeys={"abandoned_cart": journey})
    changed = parse_journey({**ABANDONED_CART, "holdout": "20%"}, name="abandoned_cart")
    third = publish_journeys(workspace=workspace, journeys={"abandoned_cart": changed})
    assert first.published == (("abandoned_cart", 1),)
    assert again.published == ()
    assert third.published == (("abandoned_cart", 2),)
    assert third.journeys.current["abandoned_cart"].version == 2
    assert set(third.journeys.versions) == {("abandoned_cart", 1), ("abandoned_cart", 2)}


def test_runs_finish_on_the_version_they_entered(workspace: Workspace) -> None:
    journeys = publish(workspace)
    ingest(workspace, journeys, [track("u1", "Product Added", T0, "a1")])
    shorter = {**ABANDONED_CART, "holdout": "0%", "steps": [{"wait": "1h"}, {"send": "other"}]}
    newer = publish(workspace, shorter)
    ingest(workspace, newer, [track("u2", "Product Added", T0, "a2")])
    advance_due(workspace=workspace, journeys=newer, now=T0 + 2 * HOUR)
    with workspace.state.connect() as connection:
        found = dict(connection.execute(select(outbox.c.customer_id, outbox.c.template)).all())
    ids = {
        e.record.user_id: e.customer_id
        for e in resolve_customers(
            workspace=workspace, records=[track(u, "x", T0, f"p{u}") for u in ("u1", "u2")]
        )
    }
    assert found == {ids["u1"]: "cart_reminder", ids["u2"]: "other"}


def test_branch_conditions_the_store_cannot_answer_are_refused_at_publish(
    workspace: Workspace,
) -> None:
    spec = {
        "trigger": {"event": "Product Added"},
        "steps": [
            {
                "branch": [
                    {
                        "when": {"type": "computed", "computed": "ltv", "op": "gte", "value": 100},
                        "then": [{"send": "a"}],
                    }
                ]
            }
        ],
    }
    with pytest.raises(UserError, match="not supported yet"):
        publish_journeys(workspace=workspace, journeys={"j": parse_journey(spec, name="j")})


def test_branches_on_traits_and_segments_read_the_store(workspace: Workspace) -> None:
    spec = {
        "trigger": {"event": "Signed Up"},
        "steps": [
            {
                "branch": [
                    {"when": {"trait": "plan", "eq": "pro"}, "then": [{"send": "pro_welcome"}]}
                ],
                "else": [{"send": "welcome"}],
            }
        ],
    }
    journeys = publish_journeys(
        workspace=workspace, journeys={"welcome": parse_journey(spec, name="welcome")}
    ).journeys
    identify = parse_batch(
        {
            "batch": [
                {"type": "identify", "userId": "p", "traits": {"plan": "pro"}, "messageId": "i1"}
            ]
        },
        received_at=T0,
    )
    store_records(workspace=workspace, records=identify)
    ingest(
        workspace,
        journeys,
        [track("p", "Signed Up", T0, "s1"), track("f", "Signed Up", T0, "s2")],
    )
    with workspace.state.connect() as connection:
        templates = sorted(connection.execute(select(outbox.c.template)).scalars())
    assert templates == ["pro_welcome", "welcome"]


def test_two_workers_share_due_runs_and_advance_each_once(
    postgres_workspace: Workspace,
) -> None:
    workspace = postgres_workspace
    journeys = publish(workspace)
    count = 2000
    records = [track(f"c{i}", "Product Added", T0, f"add-{i}") for i in range(count)]
    for start in range(0, count, 500):
        ingest(workspace, journeys, records[start : start + 500])
    reports: dict[str, AdvanceReport] = {}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            barrier.wait()
            reports[name] = advance_due(
                workspace=workspace, journeys=journeys, now=T0 + 2 * HOUR, limit=50, worker_id=name
            )
        except BaseException as error:  # surfaced below, with the thread's traceback
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(r.claimed for r in reports.values()) == count
    assert all(r.claimed > 0 for r in reports.values()), reports
    with workspace.state.connect() as connection:
        waits_left = Counter(
            connection.execute(
                select(journey_steps.c.run_id).where(
                    journey_steps.c.node == "steps.0", journey_steps.c.edge == "next"
                )
            ).scalars()
        )
        keys = connection.execute(select(outbox.c.idempotency_key)).scalars().all()
        claimed_by = Counter(connection.execute(select(journey_runs.c.claimed_by)).scalars())
    assert len(waits_left) == count and set(waits_left.values()) == {1}
    assert len(keys) == len(set(keys)) == count
    assert claimed_by == Counter({name: r.claimed for name, r in reports.items()})


def test_a_batch_that_fails_midway_leaves_nothing_and_runs_again_the_same(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the outbox rows and the steps of a batch: the transaction takes
    both back, and the next worker queues exactly what one clean pass would have."""
    journeys = publish(workspace)
    records = [track(f"c{i}", "Product Added", T0, f"add-{i}") for i in range(40)]
    ingest(workspace, journeys, records)
    before = table_counts(workspace)

    def insert_or_die(connection: Any, table: Any, **kwargs: Any) -> None:
        if table is journey_steps:
            raise RuntimeError("worker killed after writing the runs and the outbox")
        bulk_insert(connection, table, **kwargs)

    monkeypatch.setattr("orbita.services.journeys._bulk_insert", insert_or_die)
    with pytest.raises(RuntimeError):
        advance_due(workspace=workspace, journeys=journeys, now=T0 + 2 * HOUR, limit=15)
    monkeypatch.undo()
    assert table_counts(workspace) == before
    report = advance_due(workspace=workspace, journeys=journeys, now=T0 + 2 * HOUR, limit=15)
    assert report.claimed == 40
    after = table_counts(workspace)
    assert after["outbox"] == before["outbox"] + 40
    assert after["journey_steps"] == before["journey_steps"] + 80


def test_entries_and_run_events_can_be_played_apart(workspace: Workspace) -> None:
    """enter_from_events alone still honours the live run (no second run, no error);
    match_events alone ends it and starts nothing."""
    journeys = publish(workspace, {**ABANDONED_CART, "entry": "every_time", "holdout": "0%"})

    def customer_events(*records: EventRecord) -> list[CustomerEvent]:
        store_records(workspace=workspace, records=records)
        return resolve_customers(workspace=workspace, records=records)

    first = enter_from_events(
        workspace=workspace,
        journeys=journeys,
        events=customer_events(track("u1", "Product Added", T0, "a1")),
    )
    second = enter_from_events(
        workspace=workspace,
        journeys=journeys,
        events=customer_events(track("u1", "Product Added", T0 + HOUR / 2, "a2")),
    )
    assert (first.entered, second.entered, second.not_entered) == (1, 0, 1)
    purchase = customer_events(track("u1", "Order Completed", T0 + HOUR / 2, "o1"))
    ended = match_events(workspace=workspace, journeys=journeys, events=purchase)
    assert (ended.entered, ended.conversions, ended.ended) == (0, 1, 1)
    again = customer_events(track("u1", "Product Added", T0 + HOUR, "a3"))
    assert match_events(workspace=workspace, journeys=journeys, events=again).entered == 0
    assert enter_from_events(workspace=workspace, journeys=journeys, events=again).entered == 1
