"""Bounce reports built with the stdlib `email` package the way MTAs write them (from RFC
3464, RFC 5965 and the shapes Postfix, Exchange and qmail produce), around a real
original message."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid

ARRIVED = datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC)


def original_message(*, to: str, key: str, domain: str = "example.com") -> bytes:
    """A message as Orbita's sender writes one (for reports about mail not sent here)."""
    message = EmailMessage()
    message["From"] = f"Shop <shop@{domain}>"
    message["To"] = to
    message["Subject"] = "Your cart is waiting"
    message["Message-ID"] = f"<{key}@{domain}>"
    message["X-Orbita-Key"] = key
    message.set_content("Hello")
    return message.as_bytes(policy=email.policy.SMTP)


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def _delivery_status(blocks: list[Message]) -> MIMEBase:
    part = MIMEBase("message", "delivery-status")
    part.set_payload(blocks)
    return part


def _headers_only(original: bytes) -> MIMEText:
    head = original.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return MIMEText(head.replace("\r\n", "\n") + "\n", "rfc822-headers", "us-ascii")


def _as_bytes(message: Message) -> bytes:
    return message.as_bytes(policy=email.policy.SMTP)


def postfix_dsn(
    *,
    original: bytes,
    return_path: str,
    recipient: str,
    status: str = "5.1.1",
    action: str = "failed",
    reply: str = "550 5.1.1",
    detail: str = "Recipient address rejected: User unknown in local recipient table",
) -> bytes:
    """Postfix's bounce(8) report: a notification, the delivery report with X-Postfix-*
    fields, and the undelivered message returned whole."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mail.example.net (Mail Delivery System)"
    report["To"] = return_path
    subject = "Undelivered Mail Returned to Sender"
    if action == "delayed":
        subject = "Delayed Mail (still being retried)"
    report["Subject"] = subject
    report["Date"] = format_datetime(ARRIVED)
    report["Message-Id"] = make_msgid(domain="mail.example.net")
    report["Auto-Submitted"] = "auto-replied"
    diagnostic = f"{reply} <{recipient}>: {detail}"
    notice = MIMEText(
        "This is the mail system at host mail.example.net.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients. It's attached below.\n\n"
        f"<{recipient}>: host mx.example.org[192.0.2.10] said: {diagnostic}\n"
        "    (in reply to RCPT TO command)\n",
        "plain",
        "us-ascii",
    )
    notice["Content-Description"] = "Notification"
    report.attach(notice)
    status_part = _delivery_status(
        [
            _fields(
                [
                    ("Reporting-MTA", "dns; mail.example.net"),
                    ("X-Postfix-Queue-ID", "4Zq1Xb2Hk9z9sWN"),
                    ("X-Postfix-Sender", f"rfc822; {return_path}"),
                    ("Arrival-Date", format_datetime(ARRIVED)),
                ]
            ),
            _fields(
                [
                    ("Final-Recipient", f"rfc822; {recipient}"),
                    ("Original-Recipient", f"rfc822;{recipient}"),
                    ("Action", action),
                    ("Status", status),
                    ("Remote-MTA", "dns; mx.example.org"),
                    ("Diagnostic-Code", f"smtp; {diagnostic}"),
                ]
            ),
        ]
    )
    status_part["Content-Description"] = "Delivery report"
    report.attach(status_part)
    returned = MIMEMessage(email.message_from_bytes(original, policy=email.policy.compat32))
    returned["Content-Description"] = "Undelivered Message"
    report.attach(returned)
    return _as_bytes(report)


def exchange_ndr(*, original: bytes, to: str, recipient: str, status: str = "5.1.10") -> bytes:
    """Exchange's non-delivery report: a friendly text and HTML body, the delivery report in
    Exchange's lower-case field names with `X-Display-Name`, and the original's headers."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "postmaster@contoso.com"
    report["To"] = to
    report["Subject"] = "Undeliverable: Your cart is waiting"
    report["Date"] = format_datetime(ARRIVED)
    report["Message-ID"] = make_msgid(domain="EXCH01.contoso.com")
    report["Content-Language"] = "en-US"
    report["X-MS-Exchange-Message-Is-Ndr"] = ""
    report["Auto-Submitted"] = "auto-replied"
    friendly = MIMEMultipart("alternative")
    friendly.attach(
        MIMEText(
            "Delivery has failed to these recipients or groups:\n\n"
            f"{recipient}\nThe email address you entered couldn't be found.\n\n"
            "Diagnostic information for administrators:\n\nGenerating server: EXCH01.contoso.com\n"
            f"{recipient}\nRemote Server returned '550 {status} "
            "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'\n",
            "plain",
            "us-ascii",
        )
    )
    friendly.attach(
        MIMEText(
            "<html><body><p><b>Delivery has failed to these recipients or groups:</b></p>"
            f"<p>{recipient}</p></body></html>",
            "html",
            "us-ascii",
        )
    )
    report.attach(friendly)
    report.attach(
        _delivery_status(
            [
                _fields(
                    [
                        ("Reporting-MTA", "dns;EXCH01.contoso.com"),
                        ("Received-From-MTA", "dns;mail.example.net"),
                        ("Arrival-Date", format_datetime(ARRIVED)),
                    ]
                ),
                _fields(
                    [
                        ("Original-recipient", f"rfc822;{recipient}"),
                        ("Final-recipient", f"rfc822;{recipient}"),
                        ("Action", "failed"),
                        ("Status", status),
                        (
                            "Diagnostic-code",
                            f"smtp;550 {status} RESOLVER.ADR.RecipientNotFound; "
                            "Recipient not found by SMTP address lookup",
                        ),
                        ("X-Display-Name", "Customer"),
                    ]
                ),
            ]
        )
    )
    report.attach(_headers_only(original))
    return _as_bytes(report)


def arf_complaint(*, original: bytes, to: str, return_path: str, recipient: str) -> bytes:
    """A feedback loop's abuse report (RFC 5965): text, the machine-readable report, and
    the message complained about."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Mailbox Provider FBL <fbl@mailbox.example.net>"
    report["To"] = to
    report["Subject"] = "FW: Your cart is waiting"
    report["Date"] = format_datetime(ARRIVED)
    report["Message-ID"] = make_msgid(domain="mailbox.example.net")
    report.attach(MIMEText("This is an email abuse report for an email message received.\n"))
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload(
        [
            _fields(
                [
                    ("Feedback-Type", "abuse"),
                    ("User-Agent", "ExampleFBL/1.0"),
                    ("Version", "1"),
                    ("Original-Mail-From", f"<{return_path}>"),
                    ("Original-Rcpt-To", f"<{recipient}>"),
                    ("Arrival-Date", format_datetime(ARRIVED)),
                    ("Source-IP", "192.0.2.1"),
                ]
            )
        ]
    )
    report.attach(feedback)
    report.attach(MIMEMessage(email.message_from_bytes(original, policy=email.policy.compat32)))
    return _as_bytes(report)


def qmail_bounce(*, to: str, recipient: str, reply: str = "550 5.1.1 No such user") -> bytes:
    """qmail's plain-text bounce: no report part at all; only the VERP address tells which
    message it was."""
    message = EmailMessage()
    message["From"] = "MAILER-DAEMON@qmail.example.net"
    message["To"] = to
    message["Subject"] = "failure notice"
    message["Date"] = format_datetime(ARRIVED)
    message["Message-ID"] = make_msgid(domain="qmail.example.net")
    message.set_content(
        "Hi. This is the qmail-send program at qmail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{recipient}>:\n192.0.2.10 does not like recipient.\nRemote host said: {reply}\n"
        "Giving up on 192.0.2.10.\n"
    )
    return message.as_bytes(policy=email.policy.SMTP)
