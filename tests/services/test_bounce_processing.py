"""Bounces acted on, on both backends: messages sent by the real sender to a real SMTP
server, their bounce reports (built from the very messages sent) mailed to a real bounce
mailbox, and the next send to a bounced address blocked as suppressed."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from delivery_setup import T0, queue_cart_emails, write_strategy
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from dsn_samples import arf_complaint, exchange_ndr, postfix_dsn
from loopback import Received, smtp_server

from orbita.channels import close_channels, open_channels
from orbita.channels.email.bounces import BounceMailbox, parse_report
from orbita.model.bounces import Bounce
from orbita.model.strategy import Strategy
from orbita.services.bounces import BouncePolicy, BounceReport, process_bounces
from orbita.services.delivery import DeliveryReport, deliver_due, prepare_delivery
from orbita.services.workspace import Workspace
from orbita.store.state import bounces, consents, delivery_attempts, outbox, suppressions

RETURN_PATH = "bounces@bounces.example.com"


def deliver(workspace: Workspace, strategy: Strategy, folder: Path, *, now: Any) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(
                strategy=strategy, base_dir=folder, clients=clients, link_secret=b"s", seed=1
            )
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    return asyncio.run(run())


def mail_reports(workspace: Workspace, reports: list[bytes], *, now: Any) -> list[BounceReport]:
    """Each report over SMTP to a bounce mailbox that processes what it receives."""
    done: list[BounceReport] = []

    def process(found: list[Bounce]) -> None:
        done.append(process_bounces(workspace=workspace, bounces=found, now=now))

    with (
        BounceMailbox(process, domains=["bounces.example.com"]) as mailbox,
        smtplib.SMTP("127.0.0.1", mailbox.port) as client,
    ):
        for raw in reports:
            to = parse_report(raw)  # only to learn the envelope the reporting MTA would use
            assert to
            client.sendmail("", [RETURN_PATH.replace("@", f"+{to[0].outbox_key}@")], raw)
    return done


def table(workspace: Workspace, which: Any) -> list[dict[str, Any]]:
    with workspace.state.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(which))]


def sent_to(received: list[Received], address: str) -> Received:
    return next(r for r in received if r.rcpt_tos == [address])


def test_bounced_and_complaining_addresses_get_no_more_mail(
    workspace: Workspace, tmp_path: Path
) -> None:
    users = ["ann", "bo", "cy", "di"]
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port, return_path=RETURN_PATH)
        queue_cart_emails(workspace, strategy, users)
        assert deliver(workspace, strategy, tmp_path, now=T0).sent == 4
        received = list(server.messages)
        ann, bo, cy = (sent_to(received, f"{u}@example.org") for u in ("ann", "bo", "cy"))
        assert ann.mail_from.startswith("bounces+")  # VERP: the sender set it
        reports = [
            postfix_dsn(original=ann.data, return_path=ann.mail_from, recipient="ann@example.org"),
            exchange_ndr(original=bo.data, to=bo.mail_from, recipient="bo@example.org"),
            arf_complaint(
                original=cy.data,
                to="fbl@bounces.example.com",
                return_path=cy.mail_from,
                recipient="cy@example.org",
            ),
        ]
        later = T0 + timedelta(hours=1)
        done = mail_reports(workspace, reports, now=later)
        assert [o.action for report in done for o in report.outcomes] == ["suppressed"] * 3
        # The same reports again (a mailbox fetched twice): nothing changes.
        again = mail_reports(workspace, reports, now=later)
        assert [o.action for report in again for o in report.outcomes] == ["duplicate"] * 3

        queue_cart_emails(workspace, strategy, users, at=T0 + timedelta(days=1), tag="-2")
        second = deliver(workspace, strategy, tmp_path, now=T0 + timedelta(days=1))
        received_after = list(server.messages)[len(received) :]

    assert (second.sent, second.skipped) == (1, 3)
    assert [r.rcpt_tos for r in received_after] == [["di@example.org"]]
    reasons = {row["address"]: row["reason"] for row in table(workspace, suppressions)}
    assert reasons["ann@example.org"].startswith("hard bounce: 5.1.1 550 5.1.1")
    assert reasons["bo@example.org"].startswith("hard bounce: 5.1.10")
    assert reasons["cy@example.org"].startswith("complaint: abuse report")
    skipped = [a for a in table(workspace, delivery_attempts) if a["outcome"] == "skipped"]
    assert sorted(a["reason"][:27] for a in skipped) == [
        "suppressed: complaint: abus",
        "suppressed: hard bounce: 5.",
        "suppressed: hard bounce: 5.",
    ]
    [withdrawn] = table(workspace, consents)
    assert (withdrawn["topic"], withdrawn["granted"], withdrawn["source"]) == (
        "marketing",
        False,
        "complaint",
    )
    assert len(table(workspace, bounces)) == 3

    # The bounces are message events that name the message, its journey and step.
    keys = {row["customer_id"]: row["idempotency_key"] for row in table(workspace, outbox)}
    events = workspace.events.events_of(
        customer_ids=sorted(keys), name="Email Bounced", kind="track", start=None, end=later
    ).to_pylist()
    assert len(events) == 2
    complained = workspace.events.events_of(
        customer_ids=sorted(keys), name="Email Marked as Spam", kind="track", start=None, end=later
    ).to_pylist()
    assert len(complained) == 1
    properties = events[0]["properties"]
    assert '"journey":"abandoned_cart"' in properties.replace(" ", "")
    assert '"bounce_type":"hard"' in properties.replace(" ", "")


def test_soft_bounces_suppress_after_the_limit_within_the_window(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port, return_path=RETURN_PATH)
        queue_cart_emails(workspace, strategy, ["eve"])
        deliver(workspace, strategy, tmp_path, now=T0)
        [sent] = server.messages

    def delay_notice() -> bytes:  # each a new report (its own Message-ID)
        return postfix_dsn(
            original=sent.data,
            return_path=sent.mail_from,
            recipient="eve@example.org",
            action="delayed",
            status="4.2.2",
            reply="452 4.2.2",
            detail="Mailbox full",
        )

    policy = BouncePolicy(soft_limit=3, soft_window=timedelta(days=2))

    def process(raw: bytes, at: Any) -> str:
        report = process_bounces(
            workspace=workspace, bounces=parse_report(raw), now=at, policy=policy
        )
        return report.outcomes[0].action

    # Two, then a third outside the window of the first: still counted.
    assert process(delay_notice(), T0) == "counted"
    assert process(delay_notice(), T0 + timedelta(days=1)) == "counted"
    assert process(delay_notice(), T0 + timedelta(days=2, hours=1)) == "counted"
    assert table(workspace, suppressions) == []
    assert process(delay_notice(), T0 + timedelta(days=2, hours=2)) == "suppressed"
    [row] = table(workspace, suppressions)
    assert row["reason"].startswith("3 soft bounces within 2d: 4.2.2")
