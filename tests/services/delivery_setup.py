"""Outbox rows made the real way for delivery tests: customers identified, a journey
published, events ingested, runs advanced."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orbita.model.events import EventRecord
from orbita.model.messages import parse_batch
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    PublishedJourneys,
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.workspace import Workspace

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

CART_MJML = """<mjml>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hi {{ customer.first_name | default: "there" }}, your cart:</mj-text>
    </mj-column></mj-section>
    {% for line in event.products %}
    <mj-section><mj-column>
      <mj-image src="https://shop.example.com/img/{{ line.sku }}.jpg" width="120px" />
      <mj-text>{{ line.name }}, size {{ line.size }}: {{ line.price | money }}</mj-text>
      <mj-button href="https://shop.example.com/p/{{ line.sku }}">See it again</mj-button>
    </mj-column></mj-section>
    {% endfor %}
  </mj-body>
</mjml>
"""


def strategy_text(port: int, **smtp: Any) -> str:
    options = "".join(f", {key}: {value}" for key, value in smtp.items())
    return f"""workspace: shop
timezone: Europe/Kyiv
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {port}, from: "Shop <shop@example.com>"{options}}}
templates:
  cart_reminder:
    channel: email
    subject: "{{{{ customer.first_name | default: 'Hi' }}}}, your cart is waiting"
    mjml: cart.mjml
  receipt:
    channel: email
    topic: transactional
    subject: "Your receipt"
    text: "Thanks, {{{{ customer.first_name }}}}"
journeys:
  abandoned_cart:
    trigger: {{event: "Product Added"}}
    steps:
      - send: cart_reminder
  receipts:
    trigger: {{event: "Order Completed"}}
    steps:
      - send: receipt
"""


def write_strategy(folder: Path, port: int, **smtp: Any) -> Strategy:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cart.mjml").write_text(CART_MJML)
    text = strategy_text(port, **smtp)
    (folder / "strategy.yaml").write_text(text)
    return parse_strategy(text, source=str(folder / "strategy.yaml"))


def message(kind: str, user: str, at: datetime, message_id: str, **fields: Any) -> EventRecord:
    body = {"type": kind, "userId": user, "messageId": message_id, "timestamp": at.isoformat()}
    body.update(fields)
    return parse_batch({"batch": [body]}, received_at=at)[0]


def queue_cart_emails(
    workspace: Workspace,
    strategy: Strategy,
    users: Sequence[str],
    *,
    at: datetime = T0,
    traits: dict[str, dict[str, Any]] | None = None,
    event: str = "Product Added",
    tag: str = "",
) -> PublishedJourneys:
    """Identify the users (email, first name, locale), then a `Product Added` each: the
    journey queues one cart email per user."""
    identifies = [
        message(
            "identify",
            user,
            at,
            f"id-{user}",
            traits={
                "email": f"{user}@example.org",
                "first_name": user.title(),
                **((traits or {}).get(user, {})),
            },
        )
        for user in users
    ]
    store_records(workspace=workspace, records=identifies)
    journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
    adds = [
        message(
            "track",
            user,
            at,
            f"add-{user}{tag}",
            event=event,
            properties={
                "products": [
                    {"name": "Linen shirt", "size": "M", "price": 49.9, "sku": f"LS-{i}"},
                    {"name": "Canvas shoes", "size": "40", "price": 79, "sku": f"CS-{i}"},
                ]
            },
        )
        for i, user in enumerate(users)
    ]
    store_records(workspace=workspace, records=adds)
    events = resolve_customers(workspace=workspace, records=adds)
    handle_events(workspace=workspace, journeys=journeys, events=events)
    advance_due(workspace=workspace, journeys=journeys, now=at)
    return journeys
