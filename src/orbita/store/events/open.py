"""Choose the event store a workspace's settings name."""

from __future__ import annotations

from orbita.core.settings import Settings, normalise_postgres_url
from orbita.store.events.base import EventStore


def open_event_store(settings: Settings) -> EventStore:
    if settings.events_url:
        from orbita.store.events.postgres_store import PostgresEventStore

        return PostgresEventStore(normalise_postgres_url(settings.events_url))
    from orbita.store.events.duckdb_store import DuckDBEventStore

    return DuckDBEventStore(settings.duckdb_path)
