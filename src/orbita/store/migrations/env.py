"""Alembic environment: runs on the connection Orbita passes in (see store.state.migrate)."""

from __future__ import annotations

from alembic import context

from orbita.store.state import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
