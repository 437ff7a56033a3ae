"""Bounces and complaints acted on: the one place that suppresses an address because of one.

    process_bounces(workspace=…, bounces=[…], now=…)

- hard bounce: the address is suppressed (`hard bounce: 5.1.1 …`);
- complaint: suppressed, and the customer's marketing consent withdrawn;
- soft bounce: counted; `soft_limit` of them within `soft_window` suppress the address;
- each one becomes an `Email Bounced` / `Email Complained` message event naming the
  message (outbox key), journey, step and variant.

Idempotent: a report processed twice (a mailbox fetched again, a webhook retried) is
recorded once (`bounces.report_key`), and its event has a message id derived from it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from orbita.core.errors import InvalidInputError
from orbita.core.settings import Settings
from orbita.model.bounces import Bounce
from orbita.model.durations import format_duration
from orbita.services.message_events import (
    MessageEvent,
    OnStored,
    message_facts,
    record_message_events,
)
from orbita.services.workspace import Workspace, read_keys
from orbita.store.state import bounces as bounce_rows
from orbita.store.state import consents, customers, suppressions

EMAIL = "email"  # the suppressions' address kind of email addresses
MARKETING = "marketing"


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    soft_limit: int = 3
    soft_window: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class BounceOutcome:
    """What one bounce did: `action` is suppressed | counted | duplicate | unmatched."""

    kind: str
    address: str | None
    outbox_key: str | None
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class BounceReport:
    outcomes: tuple[BounceOutcome, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)


def report_key(bounce: Bounce, address: str | None) -> str:
    """One report about one address of one kind: what makes processing idempotent."""
    parts = "\x1f".join([bounce.report_id, (address or "").lower(), bounce.kind])
    return hashlib.sha256(parts.encode()).hexdigest()


def process_bounces(
    *,
    workspace: Workspace,
    bounces: Sequence[Bounce],
    now: datetime,
    policy: BouncePolicy | None = None,
    on_stored: OnStored | None = None,
) -> BounceReport:
    """Act on each bounce (see the module's docstring) and return what each did;
    `on_stored` gets the new message events (a running server's journeys)."""
    if now.tzinfo is None:
        raise InvalidInputError([], summary="process_bounces needs an aware datetime")
    policy = policy or BouncePolicy()
    if not bounces:
        return BounceReport()
    messages = message_facts(
        workspace=workspace, keys={b.outbox_key for b in bounces if b.outbox_key}
    )
    with workspace.state.connect() as connection:
        emails = _emails(connection, {int(m["customer_id"]) for m in messages.values()})
    outcomes: list[BounceOutcome] = []
    events: list[MessageEvent] = []
    with workspace.state.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # soft counts read what they write
        for bounce in bounces:
            message = messages.get(bounce.outbox_key or "")
            address = bounce.recipient or (
                emails.get(int(message["customer_id"])) if message is not None else None
            )
            outcome, event = _process_one(
                connection, bounce, message, address, now=now, policy=policy
            )
            outcomes.append(outcome)
            if event is not None:
                events.append(event)
    record_message_events(workspace=workspace, events=events, on_stored=on_stored, facts=messages)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return BounceReport(outcomes=tuple(outcomes), counts=counts)


def _emails(connection: Connection, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    query = select(customers.c.customer_id, customers.c.email).where(
        customers.c.customer_id.in_(sorted(ids))
    )
    return {int(row.customer_id): row.email for row in connection.execute(query) if row.email}


def _insert_ignoring_conflicts(connection: Connection, table: Any, values: dict[str, Any]) -> bool:
    """Insert unless the primary key or a unique key exists; whether it was inserted."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT SQLAlchemy returns keys of.
    first = next(iter(table.primary_key.columns))
    return connection.execute(statement.returning(first)).first() is not None


def _process_one(
    connection: Connection,
    bounce: Bounce,
    message: Mapping[str, Any] | None,
    address: str | None,
    *,
    now: datetime,
    policy: BouncePolicy,
) -> tuple[BounceOutcome, MessageEvent | None]:
    if address is None or len(address) > 320:  # (longer is no address: RFC 5321)
        reason = "neither the report nor its message names an address"
        return BounceOutcome(bounce.kind, None, bounce.outbox_key, "unmatched", reason), None
    address = address.lower()

    def outcome(action: str, reason: str) -> BounceOutcome:
        return BounceOutcome(bounce.kind, address, bounce.outbox_key, action, reason)

    key = report_key(bounce, address)
    detail = " ".join(part for part in (bounce.status, bounce.diagnostic) if part)[:150]
    new = _insert_ignoring_conflicts(
        connection,
        bounce_rows,
        {
            "report_key": key,
            "kind": bounce.kind,
            "address": address,
            "outbox_id": message["properties"]["outbox_id"] if message is not None else None,
            "idempotency_key": bounce.outbox_key if message is not None else None,
            "status": bounce.status,
            "diagnostic": bounce.diagnostic[:1000],
            "source": bounce.source[:32],
            "at": now,
        },
    )
    if not new:
        # Its event again (stored once): a crash may have come between the two stores.
        result = outcome("duplicate", "this report was processed before")
    elif bounce.kind == "hard":
        result = _suppress(connection, outcome, f"hard bounce: {detail}", now=now)
    elif bounce.kind == "complaint":
        result = _suppress(connection, outcome, f"complaint: {detail}", now=now)
        _withdraw_marketing(connection, message, address, now=now)
    else:
        recent = connection.execute(
            select(func.count()).where(
                bounce_rows.c.address == address,
                bounce_rows.c.kind == "soft",
                bounce_rows.c.at > now - policy.soft_window,
            )
        ).scalar_one()
        if recent >= policy.soft_limit:
            window = format_duration(policy.soft_window)
            reason = f"{recent} soft bounces within {window}: {detail}"
            result = _suppress(connection, outcome, reason, now=now)
        else:
            result = outcome("counted", f"soft bounce {recent} of {policy.soft_limit}")
    event = None
    if message is not None and bounce.outbox_key is not None:
        event = MessageEvent(
            kind="complained" if bounce.kind == "complaint" else "bounced",
            key=bounce.outbox_key,
            at=now,
            properties={
                name: value
                for name, value in {
                    "bounce_type": bounce.kind,
                    "status": bounce.status,
                    "reason": bounce.diagnostic[:500],
                    "email": address,
                    "source": bounce.source,
                }.items()
                if value is not None
            },
        )
    return result, event


def _suppress(
    connection: Connection,
    outcome: Callable[[str, str], BounceOutcome],
    reason: str,
    *,
    now: datetime,
) -> BounceOutcome:
    """The first reason stays: an address suppressed for a complaint keeps saying so."""
    found = outcome("suppressed", reason)
    assert found.address is not None
    _insert_ignoring_conflicts(
        connection,
        suppressions,
        {"kind": EMAIL, "address": found.address, "reason": reason[:200], "created_at": now},
    )
    return found


def _withdraw_marketing(
    connection: Connection, message: Mapping[str, Any] | None, address: str, *, now: datetime
) -> None:
    """A complaint says "no more marketing": on the channel of the message complained
    about, or on every channel when the report named no message."""
    if message is not None:
        ids = [int(message["customer_id"])]
    else:
        ids = [
            int(row.customer_id)
            for row in connection.execute(
                select(customers.c.customer_id).where(func.lower(customers.c.email) == address)
            )
        ]
    channel = (message or {}).get("channel") or "*"
    for customer_id in ids:
        values = {
            "customer_id": customer_id,
            "channel": channel,
            "topic": MARKETING,
            "granted": False,
            "source": "complaint",
            "at": now,
        }
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(consents).values(**values)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["customer_id", "channel", "topic"],
                set_={"granted": False, "source": "complaint", "at": now},
            )
        )


def webhook_secret_for(*, settings: Settings) -> str:
    """The shared secret of `POST /v1/webhooks/bounces` (`orbita bounces secret` prints it):
    derived from the admin key, so it is stable and never stored apart from it."""
    admin = read_keys(settings=settings).admin_key
    return hashlib.sha256(b"orbita-bounce-webhook\x00" + admin.encode()).hexdigest()


def webhook_signature(*, secret: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the raw body, what the `X-Orbita-Signature` carries."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_webhook_call(
    *, secret: str, body: bytes, signature: str | None, token: str | None
) -> bool:
    """A call is ours when it signs the body with the secret, or (providers that can only
    call a URL, such as SNS) carries the secret itself as `?token=`."""
    if signature is not None:
        return hmac.compare_digest(webhook_signature(secret=secret, body=body), signature)
    return token is not None and hmac.compare_digest(secret, token)
