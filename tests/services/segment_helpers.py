"""Building small stores for segment tests through the real ingest path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.ingest import store_records
from orbita.services.workspace import Workspace

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def record(
    user: str,
    name: str | None,
    at: datetime,
    *,
    kind: str = "track",
    properties: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> EventRecord:
    return EventRecord(
        message_id=message_id or f"{user}-{name}-{at.isoformat()}",
        type=kind,
        name=name,
        user_id=user,
        anonymous_id=None,
        properties=properties or {},
        context={},
        timestamp=at,
        received_at=at,
    )


def identify(user: str, at: datetime = T0, **traits: Any) -> EventRecord:
    return record(user, None, at, kind="identify", properties=traits, message_id=f"id-{user}")


def order(user: str, at: datetime, revenue: float = 50.0) -> EventRecord:
    return record(user, "Order Completed", at, properties={"revenue": revenue})


def store(workspace: Workspace, *records: EventRecord) -> None:
    store_records(workspace=workspace, records=list(records))


def strategy(text: str) -> Strategy:
    return parse_strategy("workspace: test\n" + text, source="strategy.yaml")
