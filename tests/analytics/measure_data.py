"""Small event sets for the KPI, funnel and cohort tests, stored through the real ingest
path, and the same events kept as plain values for the pure-Python references."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orbita.model.events import EventRecord
from orbita.services.ingest import store_records
from orbita.services.workspace import Workspace

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


@dataclass(frozen=True, slots=True)
class Event:
    user: str
    name: str
    timestamp: datetime
    message_id: str
    properties: dict[str, Any] = field(default_factory=dict)
    kind: str = "track"


@dataclass
class Events:
    """Events in the order they are written; `store` sends them through ingestion."""

    items: list[Event] = field(default_factory=list)

    def add(
        self, user: str, name: str, when: datetime, properties: dict[str, Any] | None = None
    ) -> Event:
        event = Event(user, name, when, f"m{len(self.items):05d}", dict(properties or {}))
        self.items.append(event)
        return event

    def identify(self, user: str, when: datetime, **traits: Any) -> None:
        self.items.append(Event(user, "", when, f"id-{user}-{len(self.items)}", traits, "identify"))

    def store(self, workspace: Workspace) -> dict[str, int]:
        """Store everything; the customer id of each user."""
        records = [
            EventRecord(
                message_id=e.message_id,
                type=e.kind,
                name=e.name or None,
                user_id=e.user,
                anonymous_id=None,
                properties=e.properties,
                context={},
                timestamp=e.timestamp,
                received_at=e.timestamp,
            )
            for e in sorted(self.items, key=lambda e: e.timestamp)
        ]
        store_records(workspace=workspace, records=records)
        from sqlalchemy import select

        from orbita.store.state import customers

        with workspace.state.connect() as connection:
            rows = connection.execute(select(customers.c.user_id, customers.c.customer_id))
            return {user: int(number) for user, number in rows}

    def tracks(self) -> list[Event]:
        return [e for e in self.items if e.kind == "track"]


def random_events(
    seed: int, *, customers: int, names: tuple[str, ...], days: int, per_customer: int
) -> Events:
    """Events on a coarse grid of hours so that ties in time are common."""
    rng = random.Random(seed)
    events = Events()
    for number in range(customers):
        user = f"u{number:03d}"
        for _ in range(rng.randint(0, per_customer)):
            when = at(days=rng.randint(0, days - 1), hours=rng.choice((0, 6, 12, 18)))
            events.add(user, rng.choice(names), when, {"x": rng.choice((1, 2))})
    return events
