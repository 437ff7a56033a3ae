"""The event store: one small interface, a DuckDB file by default, PostgreSQL as the second."""

from orbita.store.events.base import EVENT_SCHEMA, EventCursor, EventStore, event_table
from orbita.store.events.open import open_event_store

__all__ = ["EVENT_SCHEMA", "EventCursor", "EventStore", "event_table", "open_event_store"]
