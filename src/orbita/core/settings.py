"""One typed settings object, read from `ORBITA_*` variables and passed in — never a global."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORBITA_", extra="ignore")

    workspace: Path = Field(default=Path("orbita-data"), description="Workspace directory.")
    database_url: str | None = Field(
        default=None,
        description="Operational state (SQLAlchemy URL). Default: SQLite (WAL) in the workspace.",
    )
    events_url: str | None = Field(
        default=None,
        description="Event store: a PostgreSQL URL. Default: a DuckDB file in the workspace.",
    )
    host: str = "127.0.0.1"
    port: int = 8765
    # Segment's documented limits: 32 KB a message, 500 KB a batch request.
    max_message_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    # Group commit: the ingest writer coalesces concurrent requests up to this many events.
    ingest_max_batch_events: int = 20_000
    # Processes that validate /v1/batch bodies off the writer's GIL; None: one per core, 0: none.
    parse_workers: int | None = None
    # `orbita serve` refreshes segments this often (seconds; 0 turns it off).
    refresh_interval: float = 60.0
    # `orbita serve` advances due journey steps this often (seconds; 0: leave it to workers).
    work_interval: float = 1.0
    # `orbita serve` sends due outbox messages, looking again this often when the queue is
    # empty (seconds; 0: leave sending to `orbita worker --deliver`).
    deliver_interval: float = 0.0
    # Where customers reach this server: tracking pixels, click redirects and unsubscribe
    # links in messages start with it.
    public_url: str = "http://127.0.0.1:8765"

    # `orbita serve` takes bounce reports by SMTP on this port (0: off), for these
    # domains (empty: any), as `orbita bounces serve` does.
    bounce_port: int = 0
    bounce_domains: list[str] = Field(default_factory=list)

    @property
    def state_url(self) -> str:
        if self.database_url:
            return normalise_postgres_url(self.database_url)
        return f"sqlite:///{(self.workspace / 'state.sqlite3').resolve()}"

    @property
    def duckdb_path(self) -> Path:
        return self.workspace / "events.duckdb"

    @property
    def keys_path(self) -> Path:
        return self.workspace / "keys.json"


def normalise_postgres_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
