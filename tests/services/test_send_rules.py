"""The bank's send rules at send time, on both backends: a journey queues a credit card
offer; by the time the sender takes it, one customer's credit score has dropped and
another was refused. Neither gets the offer, each decision recorded with the rule."""

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
from orbita.core.errors import InvalidInputError
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.delivery import DeliveryReport, deliver_due, prepare_delivery
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.workspace import Workspace
from orbita.store.state import delivery_attempts, outbox

STRATEGY = """workspace: bank
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {port}, from: "Bank <hello@bank.example.com>"}}
segments:
  vip: {{trait: tier, eq: vip}}
templates:
  credit_card_offer:
    channel: email
    tags: [offer]
    subject: "A credit limit made for you"
    text: "No annual fee."
  card_shipped:
    channel: email
    topic: transactional
    subject: "Your card is on its way"
    text: "It arrives in three days."
send_rules:
  - name: credit score below 600
    when: {{trait: credit_score, lt: 600}}
    block: [offer]
  - name: refused within 90 days
    when: {{event: "Application Refused", within: 90d}}
    block: [offer]
  - when: {{segment: vip}}              # nobody here: it blocks nothing
    block: [card_shipped]
journeys:
  approved:
    trigger: {{event: "Application Approved"}}
    steps:
      - send: card_shipped
      - send: credit_card_offer
"""


def bank_strategy(port: int, text: str = STRATEGY) -> Strategy:
    return parse_strategy(text.format(port=port), source="strategy.yaml")


def deliver(workspace: Workspace, strategy: Strategy, *, now: Any) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(strategy=strategy, base_dir=Path("."), clients=clients)
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    return asyncio.run(run())


def test_offers_queued_before_the_score_dropped_are_not_sent(workspace: Workspace) -> None:
    users = {"ann": 720, "bo": 710, "cy": 690}
    with smtp_server() as (port, server):
        strategy = bank_strategy(port)
        identifies = [
            message(
                "identify",
                user,
                T0,
                f"id-{user}",
                traits={"email": f"{user}@example.org", "credit_score": score},
            )
            for user, score in users.items()
        ]
        store_records(workspace=workspace, records=identifies)
        journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
        approvals = [
            message("track", user, T0, f"ok-{user}", event="Application Approved") for user in users
        ]
        store_records(workspace=workspace, records=approvals)
        handle_events(
            workspace=workspace,
            journeys=journeys,
            events=resolve_customers(workspace=workspace, records=approvals),
        )
        advance_due(workspace=workspace, journeys=journeys, now=T0)
        with workspace.state.connect() as connection:
            queued = [row.template for row in connection.execute(select(outbox))]
        assert sorted(queued).count("credit_card_offer") == 3

        # After the journey queued the offers: bo's score drops, cy is refused elsewhere.
        later = T0 + timedelta(hours=2)
        store_records(
            workspace=workspace,
            records=[
                message("identify", "bo", later, "bo-score", traits={"credit_score": 560}),
                message(
                    "track",
                    "cy",
                    T0 + timedelta(hours=1),
                    "cy-refused",
                    event="Application Refused",
                    properties={"product": "loan"},
                ),
            ],
        )
        report = deliver(workspace, strategy, now=later)
        received = [(r.rcpt_tos[0], r.message["Subject"]) for r in server.messages]

    assert (report.sent, report.skipped) == (4, 2)
    offers = sorted(to for to, subject in received if subject == "A credit limit made for you")
    assert offers == ["ann@example.org"]
    shipped = sorted(to for to, subject in received if subject == "Your card is on its way")
    assert shipped == ["ann@example.org", "bo@example.org", "cy@example.org"]
    with workspace.state.connect() as connection:
        reasons = sorted(
            row.reason
            for row in connection.execute(
                select(delivery_attempts).where(delivery_attempts.c.outcome == "skipped")
            )
        )
    assert reasons == [
        "send rule: credit score below 600",
        "send rule: refused within 90 days",
    ]


@pytest.mark.parametrize(
    ("rule", "message_text"),
    [
        ("{when: {segment: nope}, block: [offer]}", "unknown segment 'nope'"),
        ("{when: {trait: x, eq: 1}, block: [nothing_named_so]}", "is no template"),
        ("{when: {trait: x, eq: 1}, block: []}", "send_rules"),
    ],
)
def test_rules_naming_unknown_things_fail_the_strategy(rule: str, message_text: str) -> None:
    text = STRATEGY.split("send_rules:")[0] + f"send_rules:\n  - {rule}\n"
    text = text.replace("{{", "{").replace("}}", "}").replace("{port}", "2525")
    with pytest.raises(InvalidInputError, match=message_text):
        parse_strategy(text, source="strategy.yaml")
