"""Bounces and complaints: reports parsed into `Bounce` values, and the bounce mailbox.

    parse_report(raw, envelope_to=[…])   an email: a DSN (RFC 3464), an abuse report (ARF,
                                         RFC 5965) or a plain non-standard bounce
    parse_webhook(body)                  a provider's JSON: Orbita's own shape, SES via SNS,
                                         SendGrid's event list
    BounceMailbox(on_bounces, …)         an SMTP server (aiosmtpd) taking reports for the
                                         VERP domains and handing them on

The message a report is about is found from the VERP return path the sender sets
(`bounces+<key>@domain`: MTAs send the report to it, and quote it in `X-Postfix-Sender` or
ARF's `Original-Mail-From`), else from the original Message-ID (`<key@domain>`, or the
`X-Orbita-Key` header) in the returned headers.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from orbita.channels.email.sink import free_port
from orbita.core.errors import FieldProblem, InvalidInputError
from orbita.model.bounces import Bounce, BounceKind

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"(?<![\d.])([245])\d\d(?=[ -])")
_KEY = re.compile(r"^[A-Za-z0-9_.=-]{1,64}$")
_ANGLED = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
_TEMPORARY = re.compile(r"temporar|delayed|will (?:retry|be retried)|still trying", re.I)
_POLICY = email.policy.default


class NotABounceError(ValueError):
    """The message is not a report this parser understands (nothing to act on)."""


# --- keys ----------------------------------------------------------------------------------


def key_from_verp(address: str, *, separator: str = "+") -> str | None:
    """`bounces+<key>@domain` -> `<key>`; None for an address that carries no key."""
    local = (parseaddr(address)[1] or address.strip()).partition("@")[0]
    _, found, key = local.partition(separator)
    return key if found and _KEY.match(key) else None


def key_from_message_id(message_id: str | None) -> str | None:
    """`<key@domain>` (how the sender derives Message-IDs) -> `<key>`."""
    if not message_id:
        return None
    local = message_id.strip().strip("<>").partition("@")[0]
    return local if _KEY.match(local) else None


def _report_id(message: Message, raw: bytes) -> str:
    message_id = message.get("Message-ID")
    if message_id:
        return str(message_id).strip()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# --- reports by email ------------------------------------------------------------------------


def parse_report(raw: bytes, *, envelope_to: Sequence[str] = ()) -> list[Bounce]:
    """The bounces and complaints one report says; [] for a report of success or delay
    without a failure. NotABounceError when it is no report at all."""
    message = email.message_from_bytes(raw, policy=_POLICY)
    report_id = _report_id(message, raw)
    verp_key = _first(key_from_verp(a) for a in [*envelope_to, *_addressed_to(message)])
    original = _original_headers(message)
    original_key = _first(
        [
            key_from_message_id(original.get("Message-ID")) if original else None,
            str(original.get("X-Orbita-Key"))
            if original and original.get("X-Orbita-Key")
            else None,
        ]
    )
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            return _from_dsn(part, report_id=report_id, key=verp_key or original_key)
        if kind == "message/feedback-report":
            return _from_arf(part, report_id=report_id, key=verp_key, original_key=original_key)
    return _from_plain(message, report_id=report_id, key=verp_key or original_key)


def _first(values: Iterable[str | None]) -> str | None:
    return next((value for value in values if value), None)


def _addressed_to(message: Message) -> list[str]:
    headers = [
        str(v)
        for name in ("X-Original-To", "Delivered-To", "To")
        for v in message.get_all(name) or []
    ]
    return [address for _, address in getaddresses(headers) if address]


def _original_headers(message: Message) -> Message | None:
    """The headers of the message the report is about (returned whole or headers only)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                inner = payload[0]
                return inner if isinstance(inner, Message) else None
        if kind in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return BytesHeaderParser(policy=_POLICY).parsebytes(raw)
    return None


def _field_blocks(part: Message) -> list[Message]:
    """A delivery-status part's header blocks: per message first, then per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    # message/global-delivery-status (RFC 6533) arrives as text: split it by blank lines.
    text = part.get_payload(decode=True)
    if not isinstance(text, bytes):
        return []
    chunks = re.split(rb"\r?\n\r?\n", text.strip())
    return [BytesHeaderParser(policy=_POLICY).parsebytes(chunk + b"\n") for chunk in chunks]


def _typed_address(value: Any) -> str | None:
    """`rfc822; user@example.org` -> `user@example.org`."""
    if value is None:
        return None
    text = str(value)
    address = text.partition(";")[2] if ";" in text else text
    address = address.strip().strip("<>").strip()
    return address.lower() or None


def _classify(action: str, status: str | None, diagnostic: str) -> BounceKind | None:
    if action in ("delivered", "relayed", "expanded"):
        return None
    code = status
    if code is None:
        match = _ENHANCED.search(diagnostic) or _REPLY.search(diagnostic)
        code = match.group(1) if match else None
    if action == "delayed" or (code or "").startswith("4"):
        return "soft"
    if (code or "").startswith("5") or action == "failed":
        return "hard"
    return None


def _from_dsn(part: Message, *, report_id: str, key: str | None) -> list[Bounce]:
    blocks = _field_blocks(part)
    if not blocks:
        raise NotABounceError("a delivery-status part without fields")
    per_message, recipients = blocks[0], blocks[1:]
    if per_message.get("Final-Recipient") or per_message.get("Original-Recipient"):
        per_message, recipients = Message(), blocks  # no per-message block was written
    key = key or key_from_verp(_typed_address(per_message.get("X-Postfix-Sender")) or "")
    found = []
    for block in recipients:
        recipient = _typed_address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = str(block.get("Action") or "").strip().lower()
        status_match = _ENHANCED.search(str(block.get("Status") or ""))
        status = status_match.group(0) if status_match else None
        diagnostic = _typed_diagnostic(block.get("Diagnostic-Code"))
        kind = _classify(action, status, diagnostic)
        if kind is None:
            continue
        found.append(
            Bounce(
                kind=kind,
                report_id=report_id,
                source="dsn",
                recipient=recipient,
                outbox_key=key,
                status=status,
                diagnostic=diagnostic or f"{action} {status or ''}".strip(),
            )
        )
    return found


def _typed_diagnostic(value: Any) -> str:
    """`smtp; 550 5.1.1 User unknown` -> `550 5.1.1 User unknown` (folding undone)."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    kind, separator, rest = text.partition(";")
    return rest.strip() if separator and " " not in kind.strip() else text


def _from_arf(
    part: Message, *, report_id: str, key: str | None, original_key: str | None
) -> list[Bounce]:
    payload = part.get_payload()
    fields = payload[0] if isinstance(payload, list) and payload else None
    if not isinstance(fields, Message):
        raise NotABounceError("a feedback-report part without fields")
    feedback = str(fields.get("Feedback-Type") or "").strip().lower()
    if feedback != "abuse":
        return []  # not-spam, virus, other: nothing a sender should act on
    key = key or key_from_verp(str(fields.get("Original-Mail-From") or "")) or original_key
    recipient = _typed_address(fields.get("Original-Rcpt-To") or fields.get("Removal-Recipient"))
    agent = str(fields.get("User-Agent") or "").strip()
    return [
        Bounce(
            kind="complaint",
            report_id=report_id,
            source="arf",
            recipient=recipient,
            outbox_key=key,
            diagnostic=f"abuse report{f' from {agent}' if agent else ''}",
        )
    ]


def _from_plain(message: Message, *, report_id: str, key: str | None) -> list[Bounce]:
    """Non-standard bounces (qmail, old Exchange, webmail robots): the first text part read
    for a status code and the failed address; the VERP key is what makes them usable."""
    sender = parseaddr(str(message.get("From") or ""))[1].lower()
    subject = str(message.get("Subject") or "").lower()
    robot = sender.partition("@")[0] in ("mailer-daemon", "postmaster") or any(
        word in subject for word in ("undeliver", "delivery status", "failure", "returned mail")
    )
    if key is None or not robot:
        raise NotABounceError(
            "neither a delivery status notification nor an abuse report, "
            "nor a bounce to a VERP address"
        )
    body = message.get_body(("plain",)) if hasattr(message, "get_body") else None
    text = body.get_content() if body is not None else ""
    text = text if isinstance(text, str) else ""
    enhanced = _ENHANCED.search(text)
    reply = _REPLY.search(text)
    status = enhanced.group(0) if enhanced else None
    code = status[0] if status else (reply.group(1) if reply else None)
    if code == "4" or (code is None and _TEMPORARY.search(text)):
        kind: BounceKind = "soft"
    else:
        kind = "hard"
    recipient_match = _ANGLED.search(text)
    line = next((ln.strip() for ln in text.splitlines() if _REPLY.search(ln)), "")
    return [
        Bounce(
            kind=kind,
            report_id=report_id,
            source="plain",
            recipient=recipient_match.group(1).lower() if recipient_match else None,
            outbox_key=key,
            status=status,
            diagnostic=" ".join(line.split())[:500] or subject,
        )
    ]


# --- provider webhooks -----------------------------------------------------------------------


def parse_webhook(body: Any) -> list[Bounce]:
    """A webhook body in one of three shapes (InvalidInputError naming the field
    otherwise):

    - Orbita's: `{"events": [{"type": "bounce"|"complaint", "email": …, "bounce": "hard"|
      "soft", "status": "5.1.1", "reason": …, "message_id": "<key@domain>" or "key": …,
      "id": …}]}`
    - Amazon SES through SNS: `{"Type": "Notification", "MessageId": …, "Message": "<SES
      JSON with notificationType Bounce or Complaint>"}` (subscription confirmations: [])
    - SendGrid's event list: `[{"event": "bounce"|"dropped"|"spamreport"|"deferred", …}]`
    """
    if isinstance(body, Mapping) and isinstance(body.get("events"), list):
        return [_orbita_event(event, index) for index, event in enumerate(body["events"])]
    try:
        if isinstance(body, Mapping) and "Type" in body and "Message" in body:
            return _ses(body)
        if isinstance(body, Mapping) and ("notificationType" in body or "eventType" in body):
            return _ses_message(body, report_id=str(body.get("mail", {}).get("messageId", "")))
        if isinstance(body, list) and all(isinstance(e, Mapping) and "event" in e for e in body):
            return [bounce for event in body for bounce in _sendgrid(event)]
    except (AttributeError, TypeError):  # a provider's shape with a part of the wrong type
        raise _bad("", "a provider notification with fields of unexpected types") from None
    raise _bad("", "expected {events: [...]}, an SNS notification of SES, or SendGrid's events")


def _bad(field: str, message: str) -> InvalidInputError:
    return InvalidInputError(
        [FieldProblem(field=field, message=message)], summary="invalid bounce webhook"
    )


def _orbita_event(event: Any, index: int) -> Bounce:
    where = f"events.{index}"
    if not isinstance(event, Mapping):
        raise _bad(f"{where}", "expected an object")
    kind = event.get("type")
    if kind not in ("bounce", "complaint"):
        raise _bad(f"{where}.type", "expected bounce or complaint")
    address = event.get("email")
    if not isinstance(address, str) or "@" not in address:
        raise _bad(f"{where}.email", "expected an email address")
    status = event.get("status")
    if status is not None and not (isinstance(status, str) and _ENHANCED.fullmatch(status)):
        raise _bad(f"{where}.status", "expected an enhanced status code such as 5.1.1")
    if kind == "complaint":
        bounce_kind: BounceKind = "complaint"
    else:
        declared = event.get("bounce") or ("soft" if (status or "").startswith("4") else "hard")
        if declared not in ("hard", "soft"):
            raise _bad(f"{where}.bounce", "expected hard or soft")
        bounce_kind = "hard" if declared == "hard" else "soft"
    key = event.get("key") or key_from_message_id(_str_or_none(event.get("message_id")))
    report_id = event.get("id") or _digest(orjson.dumps(dict(event), option=orjson.OPT_SORT_KEYS))
    return Bounce(
        kind=bounce_kind,
        report_id=f"webhook:{report_id}",
        source="webhook:orbita",
        recipient=address.lower(),
        outbox_key=str(key) if key else None,
        status=status,
        diagnostic=str(event.get("reason") or "")[:500],
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _ses(notification: Mapping[str, Any]) -> list[Bounce]:
    if notification.get("Type") != "Notification":
        return []  # SubscriptionConfirmation and the like: nothing about a message
    try:
        inner = orjson.loads(notification["Message"])
    except (orjson.JSONDecodeError, TypeError):
        raise _bad("Message", "expected the SES notification as JSON text") from None
    if not isinstance(inner, Mapping):
        raise _bad("Message", "expected a JSON object")
    return _ses_message(inner, report_id=str(notification.get("MessageId") or ""))


def _ses_message(message: Mapping[str, Any], *, report_id: str) -> list[Bounce]:
    kind = message.get("notificationType") or message.get("eventType")
    mail = message.get("mail") or {}
    key = key_from_verp(str(mail.get("source") or "")) or key_from_message_id(
        (mail.get("commonHeaders") or {}).get("messageId")
        or next(
            (h.get("value") for h in mail.get("headers") or [] if h.get("name") == "Message-ID"),
            None,
        )
    )
    if kind == "Bounce":
        bounce = message.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        found = []
        for recipient in bounce.get("bouncedRecipients") or []:
            found_status = _ENHANCED.search(str(recipient.get("status") or ""))
            status = found_status.group(0) if found_status else None
            hard = permanent or str(status or "").startswith("5")
            found.append(
                Bounce(
                    kind="hard" if hard else "soft",
                    report_id=f"ses:{bounce.get('feedbackId') or report_id}",
                    source="webhook:ses",
                    recipient=str(recipient.get("emailAddress") or "").lower() or None,
                    outbox_key=key,
                    status=status,
                    diagnostic=str(
                        recipient.get("diagnosticCode") or bounce.get("bounceSubType") or ""
                    )[:500],
                )
            )
        return found
    if kind == "Complaint":
        complaint = message.get("complaint") or {}
        return [
            Bounce(
                kind="complaint",
                report_id=f"ses:{complaint.get('feedbackId') or report_id}",
                source="webhook:ses",
                recipient=str(recipient.get("emailAddress") or "").lower() or None,
                outbox_key=key,
                diagnostic=f"complaint ({complaint.get('complaintFeedbackType') or 'abuse'})",
            )
            for recipient in complaint.get("complainedRecipients") or []
        ]
    return []  # Delivery, Send, Open…: not ours to act on here


def _sendgrid(event: Mapping[str, Any]) -> list[Bounce]:
    name = event.get("event")
    if name not in ("bounce", "dropped", "deferred", "spamreport"):
        return []
    address = str(event.get("email") or "").lower() or None
    report_id = f"sendgrid:{event.get('sg_event_id') or _digest(orjson.dumps(dict(event)))}"
    key = event.get("orbita_key") or key_from_message_id(_str_or_none(event.get("smtp-id")))
    if name == "spamreport":
        kind: BounceKind = "complaint"
    elif name == "deferred" or event.get("type") == "blocked":
        kind = "soft"  # SendGrid's `blocked`: the receiver refused for now (reputation, policy)
    elif name == "dropped" and "bounce" not in str(event.get("reason") or "").lower():
        return []  # dropped for SendGrid's own list or content: no news about the address
    else:
        kind = "hard"
    status = event.get("status")
    return [
        Bounce(
            kind=kind,
            report_id=report_id,
            source="webhook:sendgrid",
            recipient=address,
            outbox_key=str(key) if key else None,
            status=status if isinstance(status, str) and _ENHANCED.fullmatch(status) else None,
            diagnostic=str(event.get("reason") or event.get("response") or name)[:500],
        )
    ]


# --- the bounce mailbox ------------------------------------------------------------------------

OnBounces = Callable[[list[Bounce]], object]


class _MailboxHandler:
    def __init__(self, on_bounces: OnBounces, domains: Sequence[str]) -> None:
        self.on_bounces = on_bounces
        self.domains = {domain.lower() for domain in domains}
        self.received = 0
        self.ignored = 0
        # The mailbox's own thread, ended by `stop`: a store a callback used (DuckDB keeps
        # per-thread state) must not outlive it in an idle pool thread.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bounces")

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if self.domains and domain not in self.domains:
            return "550 5.1.1 not a bounce address of this mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        try:
            bounces = parse_report(raw, envelope_to=[str(to) for to in envelope.rcpt_tos])
        except NotABounceError:
            self.ignored += 1
            return "250 OK: not a bounce report, ignored"
        try:
            # The processing writes to the stores: off the SMTP server's event loop.
            await asyncio.get_running_loop().run_in_executor(self.worker, self.on_bounces, bounces)
        except Exception as error:  # the reporting MTA retries a 451
            return f"451 4.3.0 could not process the report now: {type(error).__name__}"
        self.received += 1
        return "250 OK: report processed"


class BounceMailbox:
    """An SMTP server taking reports addressed to `domains` (any domain when empty); each
    one parsed and handed to `on_bounces` before the server answers 250, so a report
    the stores could not take is answered 451 and the reporting MTA tries again."""

    def __init__(
        self,
        on_bounces: OnBounces,
        *,
        domains: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self._handler = _MailboxHandler(on_bounces, domains)
        self._controller = Controller(
            self._handler, hostname=host, port=self.port, data_size_limit=10 * 1024 * 1024
        )

    @property
    def processed(self) -> int:
        return self._handler.received

    @property
    def ignored(self) -> int:
        return self._handler.ignored

    def start(self) -> BounceMailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
        self._handler.worker.shutdown(wait=True)

    def __enter__(self) -> BounceMailbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
