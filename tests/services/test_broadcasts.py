"""Broadcasts on both backends: the audience resolved at send time (exclusions, merged
profiles), sticky variants and holdout, local-time and throttled send times, pause /
resume / cancel, a restarted send, the A/B decision, and mail through a real SMTP server."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from segment_helpers import identify, record, store
from sqlalchemy import delete, select, update

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import smtp_server

from orbita.channels import close_channels, open_channels
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.broadcasts import (
    broadcast_report,
    broadcasts_due,
    cancel_broadcast,
    find_occurrence,
    pause_broadcast,
    resume_broadcast,
    send_broadcast,
)
from orbita.services.delivery import DeliveryReport, deliver_due, prepare_delivery
from orbita.services.workspace import Workspace
from orbita.store.state import broadcasts, customers, outbox

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ZONES = ("Europe/Kyiv", "America/New_York", "Asia/Tokyo")


def strategy_text(port: int = 2525, broadcast: str = "") -> str:
    return f"""workspace: shop
timezone: Europe/Kyiv
segments:
  subscribers: {{trait: subscribed, eq: true}}
  vip: {{trait: vip, eq: true}}
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {port}, from: "Shop <shop@example.com>"}}
templates:
  sale:
    channel: email
    subject: "Spring sale"
    text: "Hi {{{{ customer.first_name }}}}, 20% off"
    variants: {{B: {{subject: "Spring sale: 20% off everything"}}}}
broadcasts:
{broadcast}"""


SALE = """  sale:
    audience: {segment: subscribers, exclude: [vip]}
    template: sale
    variants: {A: {weight: 50}, B: {variant: B, weight: 50}}
    holdout: 20%
"""


def make_strategy(broadcast: str = SALE, port: int = 2525) -> Strategy:
    return parse_strategy(strategy_text(port, broadcast), source="strategy.yaml")


def people(workspace: Workspace, count: int, **extra: Any) -> None:
    """Users u0…: every one subscribed except each 7th; u0-u4 VIP; zones in turn."""
    store(
        workspace,
        *(
            identify(
                f"u{i}",
                T0 - timedelta(days=1),
                email=f"u{i}@example.org",
                first_name=f"U{i}",
                subscribed=i % 7 != 6,
                vip=i < 5,
                timezone=ZONES[i % 3],
                **extra,
            )
            for i in range(count)
        ),
    )


def ids_by_user(workspace: Workspace) -> dict[str, int]:
    with workspace.state.connect() as connection:
        rows = connection.execute(select(customers.c.user_id, customers.c.customer_id)).all()
    return {str(user): int(cid) for user, cid in rows}


def rows_of(workspace: Workspace) -> list[dict[str, Any]]:
    with workspace.state.connect() as connection:
        query = select(outbox).where(outbox.c.run_id.startswith("broadcast:"))
        return [dict(row._mapping) for row in connection.execute(query)]


def deliver(
    workspace: Workspace, strategy: Strategy, folder: Path, now: datetime
) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(
                strategy=strategy, base_dir=folder, clients=clients, worker_id="s1", seed=1
            )
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    return asyncio.run(run())


def test_audience_exclusions_merges_variants_and_holdout(workspace: Workspace) -> None:
    people(workspace, 300)
    # old_u10, subscribed, is then found to be u10: the profiles merge into one.
    store(workspace, identify("old_u10", T0 - timedelta(days=2), subscribed=True))
    store(
        workspace,
        EventRecord(
            message_id="alias-u10",
            type="alias",
            name=None,
            user_id="u10",
            anonymous_id=None,
            previous_id="old_u10",
            properties={},
            context={},
            timestamp=T0 - timedelta(hours=1),
            received_at=T0 - timedelta(hours=1),
        ),
    )
    strategy = make_strategy()
    report = send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
    users = ids_by_user(workspace)
    assert "old_u10" not in users
    expected = {users[f"u{i}"] for i in range(300) if i % 7 != 6 and i >= 5}
    rows = rows_of(workspace)
    assert Counter(row["customer_id"] for row in rows) == Counter(expected)  # each once
    assert report.audience == len(expected) == report.written
    held = [row for row in rows if row["node"] == "holdout"]
    assert all(row["kind"] == "holdout" and row["status"] == "holdout" for row in held)
    assert 0.1 < len(held) / len(rows) < 0.3  # 20% of the audience, give or take
    sent = [row for row in rows if row["node"] != "holdout"]
    arms = Counter(row["node"] for row in sent)
    assert set(arms) == {"A", "B"} and min(arms.values()) > 0.35 * len(sent)
    assert {(r["node"], r["template"], r["variant"]) for r in sent} == {
        ("A", "sale", None),
        ("B", "sale", "B"),
    }
    assert all(r["status"] == "queued" and r["next_attempt_at"] == T0 for r in sent)
    assert report.by_arm == {**arms, "holdout": len(held)}
    # Sticky: a second broadcast of the same name elsewhere in time puts each customer in
    # the same arm (a recurring broadcast's occurrences agree).
    weekly = make_strategy(SALE + '    schedule: {cron: "0 9 * * 1"}\n')
    send_broadcast(
        workspace=workspace,
        strategy=weekly,
        name="sale",
        now=T0,
        wall=datetime.fromisoformat("2026-03-09T09:00"),
    )
    by_occurrence: dict[int, dict[str, str]] = {}
    for row in rows_of(workspace):
        by_occurrence.setdefault(row["customer_id"], {})[row["run_id"]] = row["node"]
    assert all(len(set(arms_of.values())) == 1 for arms_of in by_occurrence.values())
    assert all(len(arms_of) == 2 for arms_of in by_occurrence.values())


def test_local_time_sends_at_the_wall_clock_time_of_each_zone(workspace: Workspace) -> None:
    people(workspace, 30)
    strategy = make_strategy(
        SALE.replace("    holdout: 20%\n", "")
        + '    schedule: {at: "2026-03-03 09:00", local_time: true}\n'
    )
    send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
    zones = {}
    with workspace.state.connect() as connection:
        for cid, zone in connection.execute(select(customers.c.customer_id, customers.c.timezone)):
            zones[int(cid)] = zone
    rows = rows_of(workspace)
    assert rows
    for row in rows:
        local = row["next_attempt_at"].astimezone(ZoneInfo(zones[row["customer_id"]]))
        assert (local.date().isoformat(), local.hour, local.minute) == ("2026-03-03", 9, 0)
    assert len({row["next_attempt_at"] for row in rows}) == 3  # three zones, three moments
    # The worker fires it once the first zone reaches 09:00, and only once.
    occurrence = find_occurrence(workspace=workspace, name="sale")
    assert occurrence.scheduled_at == datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 09:00 at UTC+14


def test_throttle_spaces_messages_by_the_rate(workspace: Workspace) -> None:
    people(workspace, 40)
    strategy = make_strategy(
        SALE.replace("    holdout: 20%\n", "") + "    throttle: 30\n"  # one every 2 s
    )
    send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
    times = sorted(row["next_attempt_at"] for row in rows_of(workspace))
    assert times[0] == T0
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps == {2.0}
    assert times[-1] == T0 + timedelta(seconds=2 * (len(times) - 1))


def test_schedules_fire_once_when_due(workspace: Workspace) -> None:
    people(workspace, 12)
    broadcast = SALE + '    schedule: {cron: "0 9 * * 1"}\n'  # Mondays 09:00 Kyiv (07:00 UTC)
    strategy = make_strategy(broadcast)
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday, before nine in Kyiv
    assert broadcasts_due(workspace=workspace, now=start, strategy=strategy).sent == ()
    due = broadcasts_due(workspace=workspace, now=start + timedelta(hours=2), strategy=strategy)
    assert due.sent == ("sale@2026-03-02T09:00",)
    again = broadcasts_due(workspace=workspace, now=start + timedelta(hours=3), strategy=strategy)
    assert again.sent == ()
    week = broadcasts_due(workspace=workspace, now=start + timedelta(days=8), strategy=strategy)
    assert week.sent == ("sale@2026-03-09T09:00",)
    with workspace.state.connect() as connection:
        assert connection.execute(select(broadcasts.c.occurrence)).scalars().all() == [
            "2026-03-02T09:00",
            "2026-03-09T09:00",
        ]


def test_a_restarted_send_writes_nobody_twice(workspace: Workspace) -> None:
    people(workspace, 50)
    strategy = make_strategy()
    first = send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
    before = sorted(row["idempotency_key"] for row in rows_of(workspace))
    # Sending again is the same occurrence: nothing new.
    again = send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
    assert again.written == 0 and sorted(r["idempotency_key"] for r in rows_of(workspace)) == before
    # A crash half-way through the writes: the occurrence not marked written, some rows
    # missing. The worker's pass completes it without a duplicate.
    occurrence = first.occurrence
    with workspace.state.begin() as connection:
        connection.execute(update(broadcasts).values(written_at=None, state="scheduled"))
        connection.execute(
            delete(outbox).where(outbox.c.idempotency_key.in_(before[: len(before) // 2]))
        )
    broadcasts_due(workspace=workspace, now=T0 + timedelta(minutes=1), strategy=strategy)
    assert sorted(row["idempotency_key"] for row in rows_of(workspace)) == before
    assert find_occurrence(workspace=workspace, name="sale").state == "sending"
    assert occurrence.broadcast_id == find_occurrence(workspace=workspace, name="sale").broadcast_id


def test_pause_resume_cancel_through_a_real_smtp_server(
    workspace: Workspace, tmp_path: Path
) -> None:
    people(workspace, 60)
    with smtp_server() as (port, server):
        strategy = make_strategy(
            SALE.replace("    holdout: 20%\n", "") + "    throttle: 10\n", port=port
        )  # one every 6 s
        send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        total = len(rows_of(workspace))
        deliver(workspace, strategy, tmp_path, T0 + timedelta(seconds=59))
        assert len(server.messages) == 10
        pause_broadcast(workspace=workspace, name="sale", now=T0 + timedelta(minutes=1))
        assert deliver(workspace, strategy, tmp_path, T0 + timedelta(minutes=3)).claimed == 0
        statuses = Counter(row["status"] for row in rows_of(workspace))
        assert statuses == {"sent": 10, "paused": total - 10}
        resume_broadcast(
            workspace=workspace, strategy=strategy, name="sale", now=T0 + timedelta(minutes=3)
        )
        deliver(workspace, strategy, tmp_path, T0 + timedelta(minutes=3))
        sent_now = len(server.messages)
        assert 10 < sent_now < total  # those whose time came, not more
        _, cancelled = cancel_broadcast(
            workspace=workspace, name="sale", now=T0 + timedelta(minutes=3)
        )
        assert cancelled == total - sent_now
        assert deliver(workspace, strategy, tmp_path, T0 + timedelta(hours=1)).claimed == 0
        addresses = [received.rcpt_tos[0] for received in server.messages]
    assert len(addresses) == len(set(addresses)) == sent_now  # each at most once
    assert find_occurrence(workspace=workspace, name="sale").state == "cancelled"


def test_every_recipient_gets_the_mail_once_and_the_rules_hold(
    workspace: Workspace, tmp_path: Path
) -> None:
    people(workspace, 30)
    with smtp_server() as (port, server):
        strategy = make_strategy(SALE.replace("    holdout: 20%\n", ""), port=port)
        report = send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        deliver(workspace, strategy, tmp_path, T0)
        # A second send and a second sender pass after a "restart": nothing new arrives.
        send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        deliver(workspace, strategy, tmp_path, T0 + timedelta(minutes=5))
        received = [r.rcpt_tos[0] for r in server.messages]
        subjects = Counter(str(r.message["Subject"]) for r in server.messages)
    assert len(received) == len(set(received)) == report.audience
    assert set(subjects) == {"Spring sale", "Spring sale: 20% off everything"}
    summary = broadcast_report(workspace=workspace, name="sale", now=T0 + timedelta(hours=1))
    assert summary["totals"]["sent"] == report.audience
    assert summary["state"] == "sending"
    broadcasts_due(workspace=workspace, now=T0 + timedelta(hours=1), strategy=strategy)
    assert find_occurrence(workspace=workspace, name="sale").state == "done"


AB = """  sale:
    audience: subscribers
    template: sale
    variants: {A: {weight: 50}, B: {variant: B, weight: 50}}
    goal: {event: "Order Completed", within: 2d}
    ab_test: {sample: 40%, wait: 4h, metric: conversion, default: A}
"""


def _ab_run(workspace: Workspace, tmp_path: Path, rates: dict[str, int]) -> dict[str, Any]:
    """A 40% sample gets A or B; every `rates[arm]`-th recipient of an arm buys."""
    people(workspace, 1400)
    with smtp_server() as (port, server):
        strategy = make_strategy(AB, port=port)
        report = send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        assert report.rest > 0 and report.sample > 0
        deliver(workspace, strategy, tmp_path, T0)
        assert len(server.messages) == report.sample
    users = {cid: user for user, cid in ids_by_user(workspace).items()}
    seen: Counter[str] = Counter()
    orders = []
    for row in sorted(rows_of(workspace), key=lambda r: r["customer_id"]):
        if row["status"] != "sent":
            continue
        seen[row["node"]] += 1
        if seen[row["node"]] % rates[row["node"]] == 0:
            at = T0 + timedelta(hours=1)
            user = users[row["customer_id"]]
            orders.append(record(user, "Order Completed", at, properties={"revenue": 40.0}))
    store(workspace, *orders)
    early = broadcasts_due(workspace=workspace, now=T0 + timedelta(hours=3), strategy=strategy)
    assert early.decided == ()
    due = broadcasts_due(workspace=workspace, now=T0 + timedelta(hours=5), strategy=strategy)
    assert due.decided == ("sale@manual",)
    occurrence = find_occurrence(workspace=workspace, name="sale")
    assert occurrence.decision is not None
    rest = [row for row in rows_of(workspace) if row["run_id"].endswith(":rest")]
    winner = occurrence.decision["winner"]
    assert rest and all(
        (r["node"], r["status"], r["variant"]) == (winner, "queued", "B" if winner == "B" else None)
        for r in rest
    )
    return dict(occurrence.decision)


def test_ab_test_sends_the_clear_winner_to_the_rest(workspace: Workspace, tmp_path: Path) -> None:
    decision = _ab_run(workspace, tmp_path, {"A": 20, "B": 3})
    assert decision["winner"] == "B" and decision["called"] is True
    arms = {arm["arm"]: arm for arm in decision["arms"]}
    assert arms["B"]["conversion"] > 4 * arms["A"]["conversion"]
    assert decision["p_value"] < 0.05


def test_ab_test_without_a_significant_difference_sends_the_default(
    workspace: Workspace, tmp_path: Path
) -> None:
    decision = _ab_run(workspace, tmp_path, {"A": 10, "B": 10})
    assert decision["winner"] == "A" and decision["called"] is False
    assert "default" in decision["reason"]


def test_the_worker_pass_sends_a_broadcast_when_its_time_comes(workspace: Workspace) -> None:
    from orbita.services.journeys import publish_journeys
    from orbita.services.work import work_once

    people(workspace, 10)
    strategy = make_strategy(SALE + '    schedule: "2026-03-02 12:00"\n')  # Kyiv: 10:00 UTC
    journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
    for hour in (9, 10, 11):
        now = datetime(2026, 3, 2, hour, 0, tzinfo=UTC)
        work_once(workspace=workspace, strategy=strategy, journeys=journeys, now=now)
        assert bool(rows_of(workspace)) == (hour >= 10)
    assert [o.occurrence for o in [find_occurrence(workspace=workspace, name="sale")]] == [
        "2026-03-02T12:00"
    ]


def test_a_simulated_run_sends_the_broadcast_and_decides_its_test(workspace: Workspace) -> None:
    from orbita.core.clock import SimulatedClock
    from orbita.services.journeys import publish_journeys
    from orbita.services.runner import run_until

    people(workspace, 40)
    # 12:00 in Kyiv (10:00 UTC); the A/B decision 4 hours after the sample's send.
    strategy = make_strategy(AB + '    schedule: "2026-03-02 12:00"\n')
    journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    workspace.clock = SimulatedClock(start)
    run_until(
        workspace=workspace,
        strategy=strategy,
        journeys=journeys,
        start=start,
        until=start + timedelta(hours=12),
        refresh_every=None,
    )
    occurrence = find_occurrence(workspace=workspace, name="sale")
    assert occurrence.occurrence == "2026-03-02T12:00"
    assert occurrence.decision is not None and occurrence.decision["winner"] == "A"
    assert {row["status"] for row in rows_of(workspace)} == {"queued"}  # nothing delivered


def test_a_click_test_counts_the_message_events_of_each_arm(
    workspace: Workspace, tmp_path: Path
) -> None:
    from orbita.services.message_events import MessageEvent, record_message_events

    people(workspace, 600)
    test = AB.replace("sample: 40%", "sample: 60%").replace("metric: conversion", "metric: click")
    with smtp_server() as (port, _server):
        strategy = make_strategy(test, port=port)
        send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        deliver(workspace, strategy, tmp_path, T0)
    seen: Counter[str] = Counter()
    clicks = []
    for row in sorted(rows_of(workspace), key=lambda r: r["customer_id"]):
        if row["status"] != "sent":
            continue
        seen[row["node"]] += 1
        if seen[row["node"]] % {"A": 25, "B": 2}[row["node"]] == 0:
            at = T0 + timedelta(minutes=30)
            clicks.append(MessageEvent(kind="clicked", key=row["idempotency_key"], at=at))
    record_message_events(workspace=workspace, events=clicks, strategy=strategy)
    broadcasts_due(workspace=workspace, now=T0 + timedelta(hours=5), strategy=strategy)
    decision = find_occurrence(workspace=workspace, name="sale").decision
    assert decision is not None and decision["winner"] == "B" and decision["called"]
    arms = {arm["arm"]: arm for arm in decision["arms"]}
    assert (arms["A"]["click"], arms["B"]["click"]) == (seen["A"] // 25, seen["B"] // 2)
    report = broadcast_report(workspace=workspace, name="sale", now=T0 + timedelta(hours=5))
    assert report["totals"]["clicks"] == len(clicks)


def test_the_report_counts_as_the_outbox_rows_and_events_say(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Every field of every arm against a count over the outbox rows one by one: a throttled
    send half delivered (sent and queued rows), a holdout, message events and orders."""
    from orbita.services.message_events import (
        MessageEvent,
        MessageEventKind,
        record_message_events,
    )

    people(workspace, 120)
    sale = SALE + "    throttle: 30\n" + '    goal: {event: "Order Completed", within: 2d}\n'
    with smtp_server() as (port, _server):
        strategy = make_strategy(sale, port=port)
        send_broadcast(workspace=workspace, strategy=strategy, name="sale", now=T0)
        deliver(workspace, strategy, tmp_path, T0 + timedelta(minutes=1))
    rows = sorted(rows_of(workspace), key=lambda r: r["customer_id"])
    users = {cid: user for user, cid in ids_by_user(workspace).items()}
    kinds: dict[MessageEventKind, int] = {
        "opened": 2,
        "clicked": 3,
        "bounced": 5,
        "unsubscribed": 7,
    }
    message_events, orders = [], []
    expected: dict[str, Counter[str]] = {}
    statuses: dict[str, Counter[str]] = {}
    for i, row in enumerate(rows):
        arm = expected.setdefault(row["node"], Counter())
        statuses.setdefault(row["node"], Counter())[row["status"]] += 1
        arm["recipients"] += 1
        sent = row["status"] == "sent"
        if not sent and row["kind"] != "holdout":
            continue
        arm["measured"] += 1
        touch = row["sent_at"] if sent else row["next_attempt_at"]
        if sent:
            for kind, every in kinds.items():
                if i % every == 0:
                    at = touch + timedelta(minutes=10)
                    message_events.append(
                        MessageEvent(kind=kind, key=row["idempotency_key"], at=at)
                    )
                    arm[kind] += 1
        if i % 4 == 0:
            user = users[row["customer_id"]]
            at = touch + timedelta(hours=1)
            orders.append(record(user, "Order Completed", at, properties={"revenue": 10.0 + i}))
            # A second order of the customer: counted once.
            orders.append(record(user, "Order Completed", at + timedelta(minutes=5)))
            arm["conversions"] += 1
            arm["revenue"] += 10 + i
    assert {"queued", "sent"} <= {s for counted in statuses.values() for s in counted}
    assert all(want["conversions"] for want in expected.values())
    assert all(sum(want[kind] for want in expected.values()) for kind in kinds)
    record_message_events(workspace=workspace, events=message_events, strategy=strategy)
    store(workspace, *orders)

    report = broadcast_report(workspace=workspace, name="sale", now=T0 + timedelta(hours=5))

    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == set(expected) == {"A", "B", "holdout"}
    for name, arm in arms.items():
        want = expected[name]
        sent = 0 if name == "holdout" else want["measured"]
        assert arm == {
            "arm": name,
            "recipients": want["recipients"],
            "sent": sent,
            "delivered": max(0, sent - want["bounced"]),
            "opens": want["opened"],
            "clicks": want["clicked"],
            "conversions": want["conversions"],
            "conversion_rate": want["conversions"] / want["measured"] if want["measured"] else None,
            "revenue": round(float(want["revenue"]), 2),
            "unsubscribes": want["unsubscribed"],
            "statuses": dict(sorted(statuses[name].items())),
        }
    assert report["totals"]["recipients"] == sum(
        want["recipients"] for name, want in expected.items() if name != "holdout"
    )
