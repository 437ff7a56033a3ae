"""Operational state: SQLAlchemy Core tables, the engine, and schema migration.

SQLite (WAL) in the workspace by default, PostgreSQL when `ORBITA_DATABASE_URL` names one.
The schema is owned by Alembic migrations (`store/migrations`); these tables describe it and a
test checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class AwareDateTime(TypeDecorator[datetime]):
    """Time zone-aware datetimes on every backend (SQLite keeps no zone: store UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=True),
    Column("user_id", String(255), unique=True),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("telegram_chat_id", String(64)),
    Column("timezone", String(64)),
    Column("locale", String(35)),
    Column("traits", Json, nullable=False),
    Column("created_at", AwareDateTime(), nullable=False),
    Column("updated_at", AwareDateTime(), nullable=False),
)

# Every id a customer is known by: user ids (current and aliased) and anonymous ids.
identities = Table(
    "identities",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("value", String(255), primary_key=True),
    Column(
        "customer_id",
        Id,
        ForeignKey("customers.customer_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Index(None, "customer_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", AwareDateTime(), nullable=False),
)

# Erasures (GDPR): what was removed and when; no personal data is kept here.
erasures = Table(
    "erasures",
    metadata,
    Column("erasure_id", Id, primary_key=True, autoincrement=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("removed", Json, nullable=False),
    Column("erased_at", AwareDateTime(), nullable=False),
)

# Segment membership, the record: one row per stay (current members have exited_at NULL).
segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("segment", String(200), primary_key=True),
    Column("customer_id", BigInteger, primary_key=True),
    Column("entered_at", AwareDateTime(), primary_key=True),
    Column("exited_at", AwareDateTime()),
)

# One row per refresh that changed something (members or definition).
segment_refreshes = Table(
    "segment_refreshes",
    metadata,
    Column("refresh_id", Id, primary_key=True, autoincrement=True),
    Column("segment", String(200), nullable=False),
    Column("as_of", AwareDateTime(), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("entered", BigInteger, nullable=False),
    Column("exited", BigInteger, nullable=False),
    Column("definition_hash", String(64), nullable=False),
    # sum(customer_id) mod 2^61-1 of the members: with size, checks the analytic copy.
    Column("checksum", BigInteger, nullable=False),
    Column("refreshed_at", AwareDateTime(), nullable=False),
    Index(None, "segment", "as_of"),
)

# Lifecycle stage per customer over time (at most one open row per customer).
stage_history = Table(
    "stage_history",
    metadata,
    Column("customer_id", BigInteger, primary_key=True),
    Column("entered_at", AwareDateTime(), primary_key=True),
    Column("stage", String(200), primary_key=True),
    Column("exited_at", AwareDateTime()),
    Index(None, "stage", "exited_at"),
)


def create_state_engine(url: str) -> Engine:
    """An engine for the state store; SQLite runs in WAL mode with foreign keys on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # Random-id indexes (customers, identities) thrash the default 2 MB page cache.
            cursor.execute("PRAGMA cache_size=-262144")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on first start)."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# --- journeys (migration 0003) -------------------------------------------------------------
# Each published definition of a journey; running customers keep the version they entered.
journey_versions = Table(
    "journey_versions",
    metadata,
    Column("journey", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", Json, nullable=False),
    Column("definition_hash", String(64), nullable=False),
    Column("published_at", AwareDateTime(), nullable=False),
)

RUN_LIVE = ("active", "waiting")
LIVE_RUNS = text("status IN ('active', 'waiting')")

# A customer in a journey is a row, not a sleeping thread (DESIGN.md, Journeys at scale).
journey_runs = Table(
    "journey_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("journey", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    # '' for an unkeyed run: NULLs never collide in a unique index, which would let two
    # unkeyed runs of one customer in.
    Column("run_key", String(255), nullable=False),
    Column("node", String(200)),
    Column("status", String(16), nullable=False),
    Column("holdout", Boolean, nullable=False),
    Column("wake_at", AwareDateTime()),
    # Open goal window (entered_at + goal.within) while unconverted: events still matter.
    Column("goal_until", AwareDateTime()),
    Column("state", Json, nullable=False),
    Column("entered_at", AwareDateTime(), nullable=False),
    Column("updated_at", AwareDateTime(), nullable=False),
    Column("converted_at", AwareDateTime()),
    Column("exit_reason", String(200)),
    Column("claimed_by", String(200)),
    Column("claimed_until", AwareDateTime()),
    Index(None, "customer_id", "journey"),
    # Workers scan only the live runs by wake time: ended runs drop out of the index.
    Index(
        "ix_journey_runs_due",
        "wake_at",
        sqlite_where=LIVE_RUNS,
        postgresql_where=LIVE_RUNS,
    ),
    # At most one live run per (journey, customer, key): entry rules race-proof in the store.
    Index(
        "uq_journey_runs_live",
        "journey",
        "customer_id",
        "run_key",
        unique=True,
        sqlite_where=LIVE_RUNS,
        postgresql_where=LIVE_RUNS,
    ),
)

# Messages decided by a journey step, written in the step's transaction; the idempotency
# key makes a second queueing a no-op and is what senders hand to providers.
outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", Id, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("run_id", String(64), nullable=False),
    Column("journey", String(200), nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("node", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # send | webhook | suppressed
    Column("channel", String(100)),
    Column("template", String(200)),
    Column("variant", String(200)),
    Column("payload", Json, nullable=False),
    # queued | sent | failed | dead; `skipped` for suppressed rows, which are never sent.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", AwareDateTime()),
    Column("created_at", AwareDateTime(), nullable=False),
    Column("result", Json),
    Index(None, "run_id"),
    Index(
        "ix_outbox_queued",
        "next_attempt_at",
        sqlite_where=text("status = 'queued'"),
        postgresql_where=text("status = 'queued'"),
    ),
)

# Every edge a run took: per-node journey statistics count these.
journey_steps = Table(
    "journey_steps",
    metadata,
    Column("step_id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("journey", String(200), nullable=False),
    Column("node", String(200), nullable=False),
    Column("edge", String(200), nullable=False),
    Column("at", AwareDateTime(), nullable=False),
    Index(None, "journey", "node"),
    Index(None, "run_id"),
)

# A run converts at most once: the run id is the key.
journey_conversions = Table(
    "journey_conversions",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("journey", String(200), nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("arm", String(16), nullable=False),  # treatment | holdout
    Column("at", AwareDateTime(), nullable=False),
    Column("message_id", String(255), nullable=False),
    Index(None, "journey", "at"),
)


# --- delivery (migration 0004) -------------------------------------------------------------
# The outbox gains the sender's claim (a lease, so a dead sender's rows are taken over) and
# what the provider answered. Statuses the sender adds: `sending` (claimed, the message not
# yet committed at the provider), `committing` (the point of no return was recorded: for
# SMTP the final dot is about to be written), `sent`, `dead` (terminal or out of retries).
outbox.append_column(Column("claimed_by", String(200)))
outbox.append_column(Column("claimed_until", AwareDateTime()))
outbox.append_column(Column("sent_at", AwareDateTime()))
outbox.append_column(Column("provider_id", String(255)))
# Migration 0007: the message's tracked links in index order, stored before it is sent (a
# click redirects only to one of them).
outbox.append_column(Column("links", Json))
CLAIMED = text("status IN ('sending', 'committing')")
Index(
    "ix_outbox_claimed",
    outbox.c.claimed_until,
    sqlite_where=CLAIMED,
    postgresql_where=CLAIMED,
)
# Frequency caps count a customer's recent messages.
Index("ix_outbox_customer_sent", outbox.c.customer_id, outbox.c.sent_at)

# Every decision the sender made about a message, with its reason: sent, retry, dead,
# skipped (a rule said no: consent, suppression, cap), deferred (quiet hours), unconfirmed.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("attempt_id", Id, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", AwareDateTime(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(1000), nullable=False),
    Column("worker", String(200)),
    Index(None, "outbox_id"),
    Index(None, "customer_id"),
)

# Addresses no message may go to (hard bounces, complaints, manual): per address kind.
suppressions = Table(
    "suppressions",
    metadata,
    Column("kind", String(16), primary_key=True),  # email | phone | telegram | push
    Column("address", String(320), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("created_at", AwareDateTime(), nullable=False),
)

# Consent per customer, channel and subscription topic; the latest decision wins.
consents = Table(
    "consents",
    metadata,
    Column("customer_id", BigInteger, primary_key=True),
    Column("channel", String(100), primary_key=True),
    Column("topic", String(100), primary_key=True),
    Column("granted", Boolean, nullable=False),
    Column("source", String(200), nullable=False),
    Column("at", AwareDateTime(), nullable=False),
)

# --- strategy and clock (migration 0005) ---------------------------------------------------
# Each applied strategy file, whole: `orbita plan` compares a file with the newest one, and
# every worker reads the strategy from here rather than from a path on its own machine.
strategy_versions = Table(
    "strategy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("digest", String(64), nullable=False),
    Column("source", String(1000), nullable=False),  # the file's path when applied
    Column("content", Text, nullable=False),
    Column("applied_at", AwareDateTime(), nullable=False),
)

# Small named values of the workspace; `clock` is where `orbita run` left simulated time.
workspace_values = Table(
    "workspace_values",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Json, nullable=False),
    Column("updated_at", AwareDateTime(), nullable=False),
)

# --- bounces and attribution (migration 0006) ----------------------------------------------
# Every bounce and complaint processed, once (`report_key`: the report and the recipient);
# soft bounces are counted per address within a window from here.
bounces = Table(
    "bounces",
    metadata,
    Column("bounce_id", Id, primary_key=True, autoincrement=True),
    Column("report_key", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # hard | soft | complaint
    Column("address", String(320), nullable=False),
    Column("outbox_id", BigInteger),
    Column("idempotency_key", String(64)),
    Column("status", String(16)),  # the enhanced status code, 5.1.1
    Column("diagnostic", String(1000), nullable=False),
    Column("source", String(32), nullable=False),  # dsn | arf | plain | webhook:<shape>
    Column("at", AwareDateTime(), nullable=False),
    Index(None, "address", "at"),
)

# A goal event credited to a touch: a message (its outbox row), or a holdout run's arm so
# uplift compares like with like. One row per (goal event, touch); `weight` is the share
# of the conversion (1 for last or first touch, 1/n for linear), `revenue` already weighted.
attributions = Table(
    "attributions",
    metadata,
    Column("attribution_id", Id, primary_key=True, autoincrement=True),
    Column("goal_message_id", String(255), nullable=False),
    Column("touch_key", String(64), nullable=False),  # the outbox key, or the holdout run id
    Column("model", String(16), nullable=False),
    Column("journey", String(200), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("outbox_id", BigInteger),
    Column("node", String(200)),
    Column("template", String(200)),
    Column("variant", String(200)),
    Column("arm", String(16), nullable=False),  # treatment | holdout
    Column("customer_id", BigInteger, nullable=False),
    Column("goal_event", String(200), nullable=False),
    Column("touched_at", AwareDateTime(), nullable=False),
    Column("converted_at", AwareDateTime(), nullable=False),
    Column("weight", Float, nullable=False),
    Column("revenue", Float, nullable=False),
    UniqueConstraint("goal_message_id", "touch_key"),
    Index(None, "journey", "converted_at"),
)

# --- broadcasts (migration 0008) -----------------------------------------------------------
# One row per occurrence of a broadcast (a one-off send, or one time of a recurring one);
# its recipients are outbox rows with the run id `broadcast:<broadcast_id>`. States:
# scheduled (recipients not all written yet), sending, paused, cancelled, done.
broadcasts = Table(
    "broadcasts",
    metadata,
    Column("broadcast_id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("occurrence", String(64), nullable=False),
    Column("scheduled_at", AwareDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("definition", Json, nullable=False),
    Column("audience", Integer),
    Column("written_at", AwareDateTime()),
    Column("decide_at", AwareDateTime()),  # an A/B test's decision is due then
    Column("decision", Json),
    Column("created_at", AwareDateTime(), nullable=False),
    Column("updated_at", AwareDateTime(), nullable=False),
    UniqueConstraint("name", "occurrence"),
    Index(None, "state"),
)
