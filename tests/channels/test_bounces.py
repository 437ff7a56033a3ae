"""Bounce reports parsed: Postfix and Exchange DSNs, a delay notice, an ARF complaint, a
plain qmail bounce, provider webhooks; and the bounce mailbox over real SMTP."""

from __future__ import annotations

import json
import re
import smtplib
import threading

import pytest
from dsn_samples import arf_complaint, exchange_ndr, original_message, postfix_dsn, qmail_bounce

from orbita.channels.email.bounces import (
    BounceMailbox,
    NotABounceError,
    key_from_verp,
    parse_report,
    parse_webhook,
)
from orbita.core.errors import InvalidInputError
from orbita.model.bounces import Bounce

KEY = "3f9a0c51d2e4b6a7c8d9e0f1a2b3c4d5"
VERP = f"bounces+{KEY}@bounces.example.com"


def test_verp_addresses_carry_the_message_key() -> None:
    assert key_from_verp(VERP) == KEY
    assert key_from_verp(f"<{VERP}>") == KEY
    assert key_from_verp("shop@example.com") is None
    assert key_from_verp("bounces+bad key@x.org") is None


def test_postfix_hard_bounce() -> None:
    raw = postfix_dsn(
        original=original_message(to="ann@example.org", key=KEY),
        return_path=VERP,
        recipient="Ann@Example.org",
    )
    [bounce] = parse_report(raw, envelope_to=[VERP])
    assert bounce.kind == "hard"
    assert bounce.recipient == "ann@example.org"
    assert bounce.outbox_key == KEY
    assert bounce.status == "5.1.1"
    assert bounce.source == "dsn"
    assert "User unknown in local recipient table" in bounce.diagnostic
    assert not bounce.diagnostic.startswith("smtp;")


def test_postfix_delay_notice_is_a_soft_bounce() -> None:
    raw = postfix_dsn(
        original=original_message(to="bo@example.org", key=KEY),
        return_path=VERP,
        recipient="bo@example.org",
        action="delayed",
        status="4.2.2",
        reply="452 4.2.2",
        detail="Mailbox full",
    )
    [bounce] = parse_report(raw)  # the key from X-Postfix-Sender, no envelope given
    assert (bounce.kind, bounce.status, bounce.outbox_key) == ("soft", "4.2.2", KEY)


def test_exchange_ndr_without_verp_finds_the_message_by_its_message_id() -> None:
    raw = exchange_ndr(
        original=original_message(to="cy@contoso.com", key=KEY),
        to="shop@example.com",  # no VERP: the report comes back to the From address
        recipient="cy@contoso.com",
    )
    [bounce] = parse_report(raw, envelope_to=["shop@example.com"])
    assert bounce.kind == "hard"
    assert bounce.status == "5.1.10"
    assert bounce.recipient == "cy@contoso.com"
    assert bounce.outbox_key == KEY
    assert "RecipientNotFound" in bounce.diagnostic


def test_arf_abuse_report_is_a_complaint() -> None:
    raw = arf_complaint(
        original=original_message(to="di@example.org", key=KEY),
        to="fbl@example.com",
        return_path=VERP,
        recipient="di@example.org",
    )
    [bounce] = parse_report(raw)
    assert (bounce.kind, bounce.recipient, bounce.outbox_key) == (
        "complaint",
        "di@example.org",
        KEY,
    )
    assert bounce.source == "arf"


def test_plain_bounce_to_a_verp_address() -> None:
    [bounce] = parse_report(qmail_bounce(to=VERP, recipient="ed@example.org"), envelope_to=[VERP])
    assert (bounce.kind, bounce.recipient, bounce.outbox_key, bounce.status) == (
        "hard",
        "ed@example.org",
        KEY,
        "5.1.1",
    )
    soft = qmail_bounce(to=VERP, recipient="ed@example.org", reply="421 4.7.0 try again later")
    assert parse_report(soft, envelope_to=[VERP])[0].kind == "soft"


def test_ordinary_mail_is_not_a_bounce() -> None:
    raw = original_message(to="shop@example.com", key="x")
    with pytest.raises(NotABounceError):
        parse_report(raw, envelope_to=[VERP])
    with pytest.raises(NotABounceError):  # a robot's mail, but no way to tell which message
        parse_report(qmail_bounce(to="shop@example.com", recipient="ed@example.org"))


def test_the_same_report_has_the_same_id() -> None:
    raw = postfix_dsn(
        original=original_message(to="f@example.org", key=KEY),
        return_path=VERP,
        recipient="f@example.org",
    )
    assert parse_report(raw)[0].report_id == parse_report(raw)[0].report_id


def test_webhook_shapes() -> None:
    [own] = parse_webhook(
        {
            "events": [
                {
                    "type": "bounce",
                    "email": "G@example.org",
                    "status": "5.1.1",
                    "message_id": f"<{KEY}@example.com>",
                    "id": "evt-1",
                }
            ]
        }
    )
    assert (own.kind, own.recipient, own.outbox_key, own.report_id) == (
        "hard",
        "g@example.org",
        KEY,
        "webhook:evt-1",
    )
    ses_bounce = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "feedbackId": "fb-1",
            "bouncedRecipients": [
                {"emailAddress": "h@example.org", "status": "5.1.1", "diagnosticCode": "smtp; 550"}
            ],
        },
        "mail": {"messageId": "ses-1", "source": VERP},
    }
    [ses] = parse_webhook(
        {"Type": "Notification", "MessageId": "sns-1", "Message": json.dumps(ses_bounce)}
    )
    assert (ses.kind, ses.recipient, ses.outbox_key, ses.source) == (
        "hard",
        "h@example.org",
        KEY,
        "webhook:ses",
    )
    ses_complaint = {
        "notificationType": "Complaint",
        "complaint": {"feedbackId": "fb-2", "complainedRecipients": [{"emailAddress": "i@x.org"}]},
        "mail": {"commonHeaders": {"messageId": f"<{KEY}@example.com>"}},
    }
    [complaint] = parse_webhook(
        {"Type": "Notification", "MessageId": "sns-2", "Message": json.dumps(ses_complaint)}
    )
    assert (complaint.kind, complaint.outbox_key) == ("complaint", KEY)
    assert parse_webhook({"Type": "SubscriptionConfirmation", "Message": "{}"}) == []
    grid = parse_webhook(
        [
            {"event": "bounce", "email": "j@x.org", "status": "5.0.0", "sg_event_id": "a"},
            {"event": "deferred", "email": "k@x.org", "sg_event_id": "b"},
            {"event": "spamreport", "email": "l@x.org", "sg_event_id": "c"},
            {"event": "open", "email": "m@x.org", "sg_event_id": "d"},
        ]
    )
    assert [(b.kind, b.recipient) for b in grid] == [
        ("hard", "j@x.org"),
        ("soft", "k@x.org"),
        ("complaint", "l@x.org"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": [{"type": "bounce"}]}, "events.0.email"),
        ({"events": [{"type": "nope", "email": "a@b.c"}]}, "events.0.type"),
        ({"events": [{"type": "bounce", "email": "a@b.c", "status": "x"}]}, "events.0.status"),
        ({"something": 1}, "(body)"),
    ],
)
def test_bad_webhook_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(field)):
        parse_webhook(body)


def test_mailbox_takes_reports_for_its_domain_over_smtp() -> None:
    got: list[Bounce] = []
    lock = threading.Lock()

    def keep(bounces: list[Bounce]) -> None:
        with lock:
            got.extend(bounces)

    raw = postfix_dsn(
        original=original_message(to="n@example.org", key=KEY),
        return_path=VERP,
        recipient="n@example.org",
    )
    with BounceMailbox(keep, domains=["bounces.example.com"]) as mailbox:
        with smtplib.SMTP("127.0.0.1", mailbox.port) as client:
            client.sendmail("", [VERP], raw)  # a DSN's envelope sender is empty
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("", ["someone@elsewhere.org"], raw)
        processed = mailbox.processed
    assert processed == 1
    assert [(b.kind, b.outbox_key, b.recipient) for b in got] == [("hard", KEY, "n@example.org")]


def test_mailbox_answers_451_when_processing_fails() -> None:
    def fail(_bounces: list[Bounce]) -> None:
        raise RuntimeError("the store is away")

    raw = qmail_bounce(to=VERP, recipient="o@example.org")
    with (
        BounceMailbox(fail) as mailbox,
        smtplib.SMTP("127.0.0.1", mailbox.port) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("", [VERP], raw)
    assert refused.value.smtp_code == 451
