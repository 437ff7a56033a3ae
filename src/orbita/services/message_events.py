"""What happened to the messages Orbita sent, as events in the event store: `Email Sent`,
`Email Delivered`, `Email Opened`, `Email Clicked`, `Unsubscribed`, `Email Bounced`, and the
SMS, push, Telegram and webhook equivalents. Segments count them and `wait_for` steps wait
for them like any other event.

`record_message_events` is the one way in, for the sender, the tracking endpoints and
bounce processing alike:

    record_message_events(
        workspace=workspace,
        events=[MessageEvent(kind="bounced", key=outbox_key, at=now, properties={...})],
    )

Each event names its message by the outbox idempotency key; the journey, its version, the
step, the A/B variant, the channel, the template and the customer come from the outbox.
Message ids are derived from the key and the kind (and `once_per`), so a retried send, a
pixel loaded ten times or a bounce reported twice is stored once: the first one counts.
Opens and clicks flagged as machines (privacy proxies, link scanners) get names of their
own (`Email Opened by Bot`), so that segments and journeys count people only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from orbita.core.errors import InvalidInputError
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.services.apply import applied_strategy
from orbita.services.journeys import CustomerEvent
from orbita.services.workspace import Workspace
from orbita.store.events.base import event_table
from orbita.store.state import customers, journey_runs, outbox

MessageEventKind = Literal[
    "sent", "delivered", "opened", "clicked", "unsubscribed", "bounced", "complained"
]

# The channel's word in event names, by channel type (a webhook step has no channel row).
CHANNEL_WORDS = {
    "smtp": "Email",
    "sms": "SMS",
    "push": "Push",
    "telegram": "Telegram",
    "webhook": "Webhook",
}
_KIND_WORDS: dict[str, str] = {
    "sent": "Sent",
    "delivered": "Delivered",
    "opened": "Opened",
    "clicked": "Clicked",
    "bounced": "Bounced",
    "complained": "Marked as Spam",
}

OnStored = Callable[[Sequence[CustomerEvent]], None]


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """Something that happened to one sent message.

    `properties` are added to the event's own (a click's `url`, a bounce's status);
    `bot=True` with `properties["bot_reason"]` marks a machine's open or click. `once_per`
    tells events of one kind apart that each count once (a click: the link's index);
    empty, the kind counts once per message."""

    kind: MessageEventKind
    key: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    bot: bool = False
    once_per: str = ""


@dataclass(frozen=True, slots=True)
class MessageEventsReport:
    received: int
    stored: int  # new events; the rest were recorded before (or name no message)
    unknown_keys: tuple[str, ...] = ()


def event_name(*, kind: MessageEventKind, channel_type: str, bot: bool = False) -> str:
    """`Email Opened`, `SMS Sent`, `Unsubscribed`, `Email Clicked by Bot`…"""
    if kind == "unsubscribed":
        return "Unsubscribed"
    name = f"{CHANNEL_WORDS.get(channel_type, channel_type.title())} {_KIND_WORDS[kind]}"
    return f"{name} by Bot" if bot else name


def message_event_id(event: MessageEvent) -> str:
    """The stored event's message id: the same for a repeat of the same thing."""
    parts = ["orbita", event.key, event.kind + ("-bot" if event.bot else "")]
    if event.once_per:
        parts.append(event.once_per)
    return ":".join(parts)


def record_message_events(
    *,
    workspace: Workspace,
    events: Sequence[MessageEvent],
    strategy: Strategy | None = None,
    on_stored: OnStored | None = None,
    facts: Mapping[str, Mapping[str, Any]] | None = None,
) -> MessageEventsReport:
    """Store these message events (those stored before are skipped) and hand the new ones
    to `on_stored` (a running server's journeys: `LiveJourneys.on_stored`).

    `strategy` (default: the applied one) says each message's channel and its type, which
    names the events. Keys that name no outbox message are reported, not stored. `facts`:
    the messages as `message_facts` read them, when the caller has them already."""
    for event in events:
        if event.at.tzinfo is None:
            raise InvalidInputError([], summary="message events need aware datetimes")
    if not events:
        return MessageEventsReport(received=0, stored=0)
    if facts is None:
        facts = message_facts(workspace=workspace, keys={event.key for event in events})
    if strategy is None:
        applied = applied_strategy(workspace=workspace)
        strategy = applied.strategy if applied is not None else None
    received_at = workspace.clock.now()
    records: list[EventRecord] = []
    customer_ids: list[int] = []
    unknown: list[str] = []
    for event in events:
        found = facts.get(event.key)
        if found is None:
            unknown.append(event.key)
            continue
        channel, channel_type = _channel(found, strategy)
        properties = {
            **found["properties"],
            "channel": channel,
            "channel_type": channel_type,
            **event.properties,
            "bot": event.bot,
        }
        records.append(
            EventRecord(
                message_id=message_event_id(event),
                type="track",
                name=event_name(kind=event.kind, channel_type=channel_type, bot=event.bot),
                user_id=found["user_id"],
                anonymous_id=None,
                properties=properties,
                context={"library": {"name": "orbita-messages"}},
                timestamp=event.at,
                received_at=received_at,
            )
        )
        customer_ids.append(found["customer_id"])
    stored: set[str] = set()
    if records:
        stored = workspace.events.append(event_table(records, customer_ids))
    if on_stored is not None and stored:
        seen: set[str] = set()
        fresh = []
        for record, customer_id in zip(records, customer_ids, strict=True):
            if record.message_id in stored and record.message_id not in seen:
                seen.add(record.message_id)
                fresh.append(CustomerEvent(customer_id=customer_id, record=record))
        on_stored(fresh)
    return MessageEventsReport(
        received=len(events), stored=len(stored), unknown_keys=tuple(sorted(set(unknown)))
    )


def message_channel(
    strategy: Strategy | None, *, channel: str | None, template: str | None
) -> str | None:
    """The channel a message went on: the step's, else its template's."""
    if channel or strategy is None:
        return channel
    found = strategy.templates.get(template or "")
    return found.channel if found is not None else None


def _channel(found: Mapping[str, Any], strategy: Strategy | None) -> tuple[str | None, str]:
    """(channel name, channel type) of a message."""
    if found["kind"] == "webhook":
        return None, "webhook"
    properties = found["properties"]
    channel = message_channel(
        strategy, channel=properties["channel"], template=properties["template"]
    )
    config = strategy.channels.get(channel or "") if strategy is not None else None
    if config is not None:
        return channel, config.type
    # A channel since removed from the strategy: its name may still say what it was.
    return channel, channel if channel in CHANNEL_WORDS else "smtp"


def message_facts(*, workspace: Workspace, keys: set[str]) -> dict[str, dict[str, Any]]:
    """Per outbox key: the customer, when it was sent, its tracked links, and the message's
    journey facts as event properties."""
    found: dict[str, dict[str, Any]] = {}
    wanted = sorted(keys)
    query = (
        select(
            outbox.c.idempotency_key,
            outbox.c.outbox_id,
            outbox.c.kind,
            outbox.c.customer_id,
            outbox.c.journey,
            outbox.c.node,
            outbox.c.variant,
            outbox.c.channel,
            outbox.c.template,
            outbox.c.sent_at,
            outbox.c.links,
            journey_runs.c.version,
            customers.c.user_id,
        )
        .select_from(
            outbox.outerjoin(journey_runs, journey_runs.c.run_id == outbox.c.run_id).outerjoin(
                customers, customers.c.customer_id == outbox.c.customer_id
            )
        )
        .where(outbox.c.idempotency_key.in_(wanted))
    )
    with workspace.state.connect() as connection:
        for row in connection.execute(query):
            found[row.idempotency_key] = {
                "customer_id": int(row.customer_id),
                "user_id": row.user_id,
                "kind": row.kind,
                "sent_at": row.sent_at,
                "links": tuple(row.links or ()),
                "properties": {
                    "message_key": row.idempotency_key,
                    "outbox_id": int(row.outbox_id),
                    "journey": row.journey,
                    "version": row.version,
                    "step": row.node,
                    "variant": row.variant,
                    "channel": row.channel,
                    "template": row.template,
                },
            }
    return found
