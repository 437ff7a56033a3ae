"""Message events: what happened to sent messages, stored once each in the event store with
the message's journey facts, and handed on (to journeys) only when new; on both backends."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from delivery_setup import T0, queue_cart_emails, write_strategy
from sqlalchemy import select
from test_tracking import deliver

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import smtp_server

from orbita.core.errors import InvalidInputError
from orbita.services.journeys import CustomerEvent
from orbita.services.message_events import (
    MessageEvent,
    event_name,
    message_event_id,
    record_message_events,
)
from orbita.services.workspace import Workspace
from orbita.store.state import outbox

END = datetime(2100, 1, 1, tzinfo=UTC)


def _stored(workspace: Workspace, name: str) -> list[dict[str, Any]]:
    table = workspace.events.events_of(
        customer_ids=list(range(1, 50)), name=name, kind="track", start=None, end=END
    )
    return [orjson.loads(p) for p in table.column("properties").to_pylist()]


def test_names_follow_the_channel_and_say_bot() -> None:
    assert event_name(kind="sent", channel_type="smtp") == "Email Sent"
    assert event_name(kind="delivered", channel_type="sms") == "SMS Delivered"
    assert event_name(kind="sent", channel_type="push") == "Push Sent"
    assert event_name(kind="sent", channel_type="telegram") == "Telegram Sent"
    assert event_name(kind="sent", channel_type="webhook") == "Webhook Sent"
    assert event_name(kind="bounced", channel_type="smtp") == "Email Bounced"
    assert event_name(kind="complained", channel_type="smtp") == "Email Marked as Spam"
    assert event_name(kind="opened", channel_type="smtp", bot=True) == "Email Opened by Bot"
    assert event_name(kind="unsubscribed", channel_type="sms") == "Unsubscribed"
    first = MessageEvent(kind="clicked", key="k1", at=T0, once_per="0")
    again = MessageEvent(kind="clicked", key="k1", at=T0 + timedelta(hours=1), once_per="0")
    other_link = MessageEvent(kind="clicked", key="k1", at=T0, once_per="1")
    by_bot = MessageEvent(kind="clicked", key="k1", at=T0, once_per="0", bot=True)
    ids = {message_event_id(e) for e in (first, again, other_link, by_bot)}
    assert len(ids) == 3  # a repeat is the same event; another link or a bot's is not


def test_sender_and_bounces_record_each_message_event_once(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, _server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["ann", "bob", "cyd"])
        assert deliver(workspace, strategy, tmp_path).sent == 3
    with workspace.state.connect() as connection:
        keys = dict(
            connection.execute(select(outbox.c.customer_id, outbox.c.idempotency_key)).all()
        )
    assert len(_stored(workspace, "Email Sent")) == 3
    assert len(_stored(workspace, "Email Delivered")) == 3

    handed: list[CustomerEvent] = []

    def on_stored(events: Sequence[CustomerEvent]) -> None:
        handed.extend(events)

    # A bounce processor reports a hard bounce for one message, twice, and one unknown key.
    bounce = MessageEvent(
        kind="bounced",
        key=keys[1],
        at=T0 + timedelta(minutes=3),
        properties={"bounce_type": "hard", "status": "5.1.1"},
    )
    report = record_message_events(
        workspace=workspace,
        events=[bounce, bounce, MessageEvent(kind="bounced", key="nope", at=T0)],
        strategy=strategy,
        on_stored=on_stored,
    )
    assert (report.received, report.stored, report.unknown_keys) == (3, 1, ("nope",))
    again = record_message_events(
        workspace=workspace, events=[bounce], strategy=strategy, on_stored=on_stored
    )
    assert again.stored == 0
    assert [(e.customer_id, e.record.name) for e in handed] == [(1, "Email Bounced")]
    (stored,) = _stored(workspace, "Email Bounced")
    assert stored == {
        "message_key": keys[1],
        "outbox_id": stored["outbox_id"],
        "journey": "abandoned_cart",
        "version": 1,
        "step": "steps.0",
        "variant": None,
        "channel": "email",
        "channel_type": "smtp",
        "template": "cart_reminder",
        "bounce_type": "hard",
        "status": "5.1.1",
        "bot": False,
    }
    assert handed[0].record.user_id == "ann"
    assert handed[0].record.timestamp == T0 + timedelta(minutes=3)


def test_times_must_be_aware(workspace: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="aware"):
        record_message_events(
            workspace=workspace,
            events=[MessageEvent(kind="opened", key="k", at=datetime(2026, 1, 1))],  # noqa: DTZ001
        )
