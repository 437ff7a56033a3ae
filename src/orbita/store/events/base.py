"""What every event store does, and the Arrow shape events travel in."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import pyarrow as pa

from orbita.core.errors import UserError
from orbita.model.events import EventRecord, StoredEvent

# Append order is time order: DuckDB's zone maps then make recent-window segments fast.
EVENT_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("customer_id", pa.int64()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("type", pa.string()),
        ("name", pa.string()),
        ("properties", pa.string()),  # JSON text
        ("context", pa.string()),  # JSON text
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = tuple(EVENT_SCHEMA.names)
EVENTS_OF_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("name", pa.string()),
        ("properties", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
)

# The profile snapshot segment queries join (JSON as text, as in events).
CUSTOMER_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("user_id", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("telegram_chat_id", pa.string()),
        ("timezone", pa.string()),
        ("locale", pa.string()),
        ("traits", pa.string()),  # JSON text
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
RFM_CELL_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("r", pa.int8()),
        ("f", pa.int8()),
        ("m", pa.int8()),
        ("cell", pa.string()),
    ]
)


def event_table(records: Sequence[EventRecord], customer_ids: Sequence[int]) -> pa.Table:
    """Records and their resolved customers as an Arrow table in EVENT_SCHEMA.

    Each store derives its deduplication key from message_id itself (an MD5 of it, in SQL),
    which keeps hashing off the Python hot path.
    """
    return pa.table(
        {
            "message_id": [r.message_id for r in records],
            "customer_id": customer_ids,
            "user_id": [r.user_id for r in records],
            "anonymous_id": [r.anonymous_id for r in records],
            "type": [r.type for r in records],
            "name": [r.name for r in records],
            "properties": [_json(r.properties) for r in records],
            "context": [_json(r.context) for r in records],
            "timestamp": [r.timestamp for r in records],
            "received_at": [r.received_at for r in records],
        },
        schema=EVENT_SCHEMA,
    )


def _json(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode() if value else "{}"


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a newest-first page of a customer's events stopped: opaque to API clients."""

    timestamp: datetime
    message_id: str

    def encode(self) -> str:
        raw = orjson.dumps([self.timestamp.isoformat(), self.message_id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> EventCursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            stamp, message_id = orjson.loads(raw)
            timestamp = datetime.fromisoformat(stamp)
            if timestamp.tzinfo is None or not isinstance(message_id, str):
                raise ValueError(token)
            return cls(timestamp=timestamp, message_id=message_id)
        except (ValueError, TypeError, UnicodeDecodeError, orjson.JSONDecodeError):
            raise UserError("cursor: not a cursor this API returned") from None


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A row selected as SELECT_COLUMNS, as a StoredEvent."""
    (message_id, customer_id, user_id, anonymous_id, kind, name, props, ctx, ts, received) = row
    return StoredEvent(
        message_id=message_id,
        customer_id=int(customer_id),
        type=kind,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=_loads(props),
        context=_loads(ctx),
        timestamp=ts.astimezone(UTC),
        received_at=received.astimezone(UTC),
    )


def _loads(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    loaded = orjson.loads(value)
    return loaded if isinstance(loaded, dict) else {}


SELECT_COLUMNS = (
    "message_id, customer_id, user_id, anonymous_id, type, name, properties, context, "
    "timestamp, received_at"
)


# SQL text and the values its named placeholders take.
Statement = tuple[str, Mapping[str, Any]]


class EventStore(Protocol):
    """Events of one workspace. Implementations are safe to call from several threads."""

    backend: str

    def append(self, events: pa.Table) -> set[str]:
        """Store events (EVENT_SCHEMA) not stored before; return the message ids stored now."""
        ...

    def existing_message_ids(self, message_ids: Iterable[str]) -> set[str]:
        """Which of these message ids are stored already."""
        ...

    def count(self, *, customer_id: int | None = None) -> int: ...

    def page(
        self, *, customer_id: int, limit: int, after: EventCursor | None = None
    ) -> list[tuple[StoredEvent, EventCursor]]:
        """A customer's events, newest first, starting after `after`."""
        ...

    def events_of(
        self,
        *,
        customer_ids: Sequence[int],
        name: str,
        kind: str,
        start: datetime | None,
        end: datetime,
    ) -> pa.Table:
        """These customers' events of one name and type in (start, end]: columns of
        EVENTS_OF_SCHEMA (properties as JSON text). One fixed, parametrised query."""
        ...

    def reassign(self, *, moves: Mapping[int, int]) -> int:
        """Identity merges: move each merged customer's events to the one it was merged into
        (source → target), in one statement; returns how many events moved."""
        ...

    def delete_customers(self, *, customer_ids: Sequence[int]) -> int:
        """Erase every event of these customers; returns how many were removed."""
        ...

    def counts_by_name(self) -> dict[str, int]: ...

    def ibis(self) -> Any:
        """An Ibis backend on this store, for portable queries (segments, analytics)."""
        ...

    def read_with_setup(
        self, *, setup: Sequence[Statement], queries: Sequence[Statement]
    ) -> list[pa.Table]:
        """Run SQL compiled once for this engine (values bound by name: `$name` on DuckDB,
        `%(name)s` on PostgreSQL): `setup` (the temporary tables the queries read), then each
        query, on one connection in one transaction that is rolled back, so that nothing
        they made outlives the call. The rows of each query."""
        ...

    # -- tables the segment queries read beside `events` (engine/segments/tables.py) --------

    def sync_customers(self, customers: pa.Table, *, mark: datetime | None = None) -> None:
        """Replace the `customers` snapshot (CUSTOMER_SCHEMA) that segment queries join;
        `mark`: the latest received_at of the events it reflects (see `snapshot_mark`)."""
        ...

    def update_customers(self, customers: pa.Table, *, remove: pa.Array, mark: datetime) -> None:
        """Replace these customers' rows of the snapshot (and drop those in `remove`) and
        move the mark, in one transaction."""
        ...

    def snapshot_mark(self) -> datetime | None:
        """The mark of the last snapshot write; None: no snapshot yet (a full copy is due)."""
        ...

    def put_rfm_cells(self, cells: pa.Table) -> None:
        """Replace `rfm_cells` (RFM_CELL_SCHEMA)."""
        ...

    def apply_members(self, *, key: str, entered: pa.Array, exited: pa.Array) -> None:
        """Update the current members of `key` (a segment, a stage) in `segment_members`."""
        ...

    def apply_member_changes(self, changes: pa.Table) -> None:
        """Many keys' changes in one write: rows of (segment, customer_id, side), side 1
        entered and 2 exited."""
        ...

    def replace_members(self, *, key: str, members: pa.Array) -> None:
        """Set the current members of `key` to exactly `members` (a rebuild from the record)."""
        ...

    def close(self) -> None: ...


def with_cursor(event: StoredEvent) -> tuple[StoredEvent, EventCursor]:
    return event, EventCursor(timestamp=event.timestamp, message_id=event.message_id)
