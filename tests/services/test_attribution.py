"""Attribution on both backends: a journey sends two reminders (or, for its holdout, none),
the real sender delivers them to a real SMTP server, customers order at known moments, and
each order is credited as the goal's model says, with its revenue."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from delivery_setup import T0, message
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import smtp_server

from orbita.channels import close_channels, open_channels
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.attribution import attribute_due, attribute_window, attribution_summary
from orbita.services.delivery import deliver_due, prepare_delivery
from orbita.services.ingest import store_records
from orbita.services.journey_stats import journey_stats
from orbita.services.journeys import (
    PublishedJourneys,
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.workspace import Workspace
from orbita.store.state import attributions, journey_runs, outbox

STRATEGY = """workspace: shop
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {port}, from: "Shop <shop@example.com>"}}
templates:
  first_reminder: {{channel: email, subject: "Your cart", text: "Still there."}}
  second_reminder: {{channel: email, subject: "Your cart, again", text: "Still there!"}}
journeys:
  abandoned_cart:
    trigger: {{event: "Product Added"}}
    goal: {{event: "Order Completed", within: 7d, where: {{status: completed}}{model}}}
    holdout: 30%
    steps:
      - send: first_reminder
      - wait: 1d
      - send: second_reminder
"""
USERS = [f"u{i:02d}" for i in range(16)]


def deliver(workspace: Workspace, strategy: Strategy, *, now: Any) -> None:
    async def run() -> None:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(strategy=strategy, base_dir=Path("."), clients=clients)
            await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    asyncio.run(run())


def track(workspace: Workspace, journeys: PublishedJourneys, records: list[Any]) -> None:
    store_records(workspace=workspace, records=records)
    events = resolve_customers(workspace=workspace, records=records)
    handle_events(workspace=workspace, journeys=journeys, events=events)


def order(user: str, at: Any, tag: str, **properties: Any) -> Any:
    properties = {"status": "completed", **properties}
    return message(
        "track", user, at, f"order-{user}-{tag}", event="Order Completed", properties=properties
    )


@pytest.mark.parametrize("model", ["last_touch", "linear"])
def test_orders_are_credited_to_the_messages_before_them(workspace: Workspace, model: str) -> None:
    with smtp_server() as (port, server):
        text = STRATEGY.format(port=port, model=f", attribution: {model}")
        strategy = parse_strategy(text, source="strategy.yaml")
        store_records(
            workspace=workspace,
            records=[
                message("identify", u, T0, f"id-{u}", traits={"email": f"{u}@example.org"})
                for u in USERS
            ],
        )
        journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
        track(
            workspace,
            journeys,
            [message("track", u, T0, f"add-{u}", event="Product Added") for u in USERS],
        )
        advance_due(workspace=workspace, journeys=journeys, now=T0)
        deliver(workspace, strategy, now=T0)
        with workspace.state.connect() as connection:
            treated = connection.execute(
                select(journey_runs.c.customer_id).where(journey_runs.c.holdout.is_(False))
            ).scalars()
            first_treated = min(treated)
        early = USERS[first_treated - 1]  # customer ids follow the identify order
        orders = [
            order(early, T0 + timedelta(hours=12), "early", revenue=40),  # between the two
            *(
                order(u, T0 + timedelta(days=2), "main", revenue=100 + i)
                for i, u in enumerate(USERS)
                if i % 2 == 0
            ),
            order("u06", T0 + timedelta(days=3), "total", total=70),  # `total` when no revenue
            order(
                "u08", T0 + timedelta(days=3), "test", revenue=999, status="test"
            ),  # not the goal
            order("u02", T0 + timedelta(days=10), "late", revenue=55),  # after the window
        ]
        track(workspace, journeys, orders[:1])
        advance_due(workspace=workspace, journeys=journeys, now=T0 + timedelta(days=1))
        deliver(workspace, strategy, now=T0 + timedelta(days=1))
        track(workspace, journeys, orders[1:])
        assert len(server.messages) > 0

    end = T0 + timedelta(days=15)
    report = attribute_window(workspace=workspace, journeys=strategy.journeys, start=None, end=end)
    again = attribute_window(workspace=workspace, journeys=strategy.journeys, start=None, end=end)
    assert again.stored == 0 and again.attributed == report.attributed  # idempotent

    with workspace.state.connect() as connection:
        sent = [dict(r._mapping) for r in connection.execute(select(outbox))]
        runs = {r.customer_id: r for r in connection.execute(select(journey_runs))}
        rows = [dict(r._mapping) for r in connection.execute(select(attributions))]
    holdout = {cid for cid, run in runs.items() if run.holdout}
    assert holdout and len(holdout) < len(USERS)  # both arms are there
    node = {r["template"]: r["node"] for r in sent}
    by_goal: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_goal.setdefault(row["goal_message_id"], []).append(row)

    # The test order and the late one are nobody's conversion.
    assert not any(key.endswith(("-test", "-late")) for key in by_goal)
    assert [row["node"] for row in by_goal[f"order-{early}-early"]] == [node["first_reminder"]]
    for key, credited in by_goal.items():
        customer = credited[0]["customer_id"]
        assert sum(row["weight"] for row in credited) == pytest.approx(1.0)
        if customer in holdout:
            [row] = credited
            assert (row["arm"], row["touch_key"], row["outbox_id"]) == (
                "holdout",
                runs[customer].run_id,
                None,
            )
            continue
        nodes = sorted(row["node"] for row in credited)
        if key == f"order-{early}-early" or model == "last_touch":
            expected = (
                [node["first_reminder"]]
                if key == f"order-{early}-early"
                else [node["second_reminder"]]
            )
        else:
            expected = sorted([node["first_reminder"], node["second_reminder"]])
        assert nodes == expected, key
        assert {row["arm"] for row in credited} == {"treatment"}
    # Revenue: as the event said, shared by the weights.
    total = {key: sum(row["revenue"] for row in credited) for key, credited in by_goal.items()}
    assert total.get("order-u06-total") == pytest.approx(70)
    assert total["order-u00-main"] == pytest.approx(100)
    # Every goal event within a week of a message or a holdout entry got credit.
    expected_keys = {o.message_id for o in orders if not o.message_id.endswith(("-test", "-late"))}
    assert set(by_goal) == expected_keys
    assert report.attributed == len(expected_keys)

    summary = attribution_summary(workspace=workspace, journey="abandoned_cart")
    assert journey_stats(workspace=workspace, name="abandoned_cart").attributed == summary
    arms = {(s.node, s.arm): s for s in summary}
    holdout_revenue = sum(total[k] for k, c in by_goal.items() if c[0]["customer_id"] in holdout)
    if holdout_revenue:
        assert arms[(None, "holdout")].revenue == pytest.approx(holdout_revenue)
    assert sum(s.revenue for s in summary) == pytest.approx(sum(total.values()))
    assert sum(s.conversions for s in summary) == pytest.approx(len(expected_keys))

    # The worker pass's call: everything the first time (stored already), then at most
    # every five minutes of the clock.
    first = attribute_due(workspace=workspace, journeys=strategy.journeys, now=end)
    assert first is not None and (first.attributed, first.stored) == (report.attributed, 0)
    soon = end + timedelta(minutes=1)
    assert attribute_due(workspace=workspace, journeys=strategy.journeys, now=soon) is None
    later = end + timedelta(minutes=6)
    assert attribute_due(workspace=workspace, journeys=strategy.journeys, now=later) is not None
