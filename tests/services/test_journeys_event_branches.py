"""Branches on event aggregates: answered from the event store for a batch's customers at
each run's own wake time, on both backends, and the same as the reference evaluator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from orbita.model.events import EventRecord
from orbita.model.journeys import parse_journey
from orbita.model.messages import parse_batch
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.workspace import Workspace
from orbita.store.state import outbox

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ORDER = "Order Completed"

# The branch is decided one day after the trigger: orders up to then count, later ones not.
SPEC: dict[str, Any] = {
    "trigger": {"event": "Product Viewed"},
    "steps": [
        {"wait": "1d"},
        {
            "branch": [
                {
                    "when": {
                        "event": "Order Completed",
                        "within": "30d",
                        "sum": {"revenue": ">= 100"},
                    },
                    "then": [{"send": "vip_thanks"}],
                },
                {
                    "when": {
                        "event": "Order Completed",
                        "within": "7d",
                        "where": {"channel": "web"},
                    },
                    "then": [{"send": "thanks"}],
                },
                {
                    "when": {"not": {"event": ORDER, "count": ">= 1"}},
                    "then": [{"send": "first_order_offer"}],
                },
            ],
            "else": [{"send": "come_back"}],
        },
    ],
}


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


# user -> (orders: (days before the branch, revenue, channel), expected template)
CASES: dict[str, tuple[list[tuple[float, float, str]], str]] = {
    "big_spender": ([(20, 60, "app"), (3, 50, "app")], "vip_thanks"),
    "recent_web": ([(3, 20, "web")], "thanks"),
    "recent_app": ([(3, 20, "app")], "come_back"),
    "old_web": ([(10, 20, "web")], "come_back"),  # outside 7 days, under 100 in 30
    "ancient_big": ([(40, 500, "web")], "come_back"),  # outside both windows
    "never": ([], "first_order_offer"),
    # Ordered after the branch ran (imported later): the decision does not see the future.
    "after_branch": ([(-0.5, 500, "web")], "first_order_offer"),
    # Exactly 30 days before: outside `within: 30d` (its start is exclusive); an order all
    # the same, so not the first-order arm.
    "edge_30d": ([(30, 500, "web")], "come_back"),
}


def run(workspace: Workspace, *, limit: int = 3) -> dict[str, str]:
    journey = parse_journey(SPEC, name="post_visit")
    journeys = publish_journeys(workspace=workspace, journeys={"post_visit": journey}).journeys
    branch_at = T0 + DAY
    history: list[EventRecord] = []
    for user, (orders, _) in CASES.items():
        for index, (days, revenue, channel) in enumerate(orders):
            at = branch_at - timedelta(days=days)
            history.append(
                track(
                    user,
                    "Order Completed",
                    at,
                    f"o-{user}-{index}",
                    revenue=revenue,
                    channel=channel,
                )
            )
    store_records(workspace=workspace, records=history)  # history: triggers nothing
    views = [
        track(user, "Product Viewed", T0 + timedelta(minutes=i), f"v-{user}")
        for i, user in enumerate(CASES)
    ]
    store_records(workspace=workspace, records=views)
    events = resolve_customers(workspace=workspace, records=views)
    handle_events(workspace=workspace, journeys=journeys, events=events)
    advance_due(workspace=workspace, journeys=journeys, now=T0 + 2 * DAY, limit=limit)
    ids = {e.record.user_id: e.customer_id for e in events}
    with workspace.state.connect() as connection:
        sent = dict(connection.execute(select(outbox.c.customer_id, outbox.c.template)).all())
    return {user: sent[ids[user]] for user in CASES}


def test_event_aggregates_decide_the_branch_at_each_runs_wake_time(workspace: Workspace) -> None:
    assert run(workspace) == {user: template for user, (_, template) in CASES.items()}


def test_one_batch_or_many_decides_the_same(workspace: Workspace) -> None:
    """Batches of one and batches of all fetch different customer sets and windows."""
    assert run(workspace, limit=1) == run_again(workspace, limit=100)


def run_again(workspace: Workspace, *, limit: int) -> dict[str, str]:
    """The same journey under another name, over the same events, in larger batches."""
    journey = parse_journey(SPEC, name="post_visit_2")
    journeys = publish_journeys(workspace=workspace, journeys={"post_visit_2": journey}).journeys
    views = [
        track(user, "Product Viewed", T0 + timedelta(minutes=i), f"v2-{user}")
        for i, user in enumerate(CASES)
    ]
    store_records(workspace=workspace, records=views)
    events = resolve_customers(workspace=workspace, records=views)
    handle_events(workspace=workspace, journeys=journeys, events=events)
    advance_due(workspace=workspace, journeys=journeys, now=T0 + 2 * DAY, limit=limit)
    ids = {e.record.user_id: e.customer_id for e in events}
    with workspace.state.connect() as connection:
        sent = dict(
            connection.execute(
                select(outbox.c.customer_id, outbox.c.template).where(
                    outbox.c.journey == "post_visit_2"
                )
            ).all()
        )
    return {user: sent[ids[user]] for user in CASES}
