"""Journeys: published versions, runs, the outbox, steps taken and conversions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id, Json

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LIVE = sa.text("status IN ('active', 'waiting')")
QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_table(
        "journey_versions",
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", Json, nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("published_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("journey", "version", name="pk_journey_versions"),
    )
    op.create_table(
        "journey_runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("run_key", sa.String(255), nullable=False),
        sa.Column("node", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("wake_at", AwareDateTime()),
        sa.Column("goal_until", AwareDateTime()),
        sa.Column("state", Json, nullable=False),
        sa.Column("entered_at", AwareDateTime(), nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
        sa.Column("converted_at", AwareDateTime()),
        sa.Column("exit_reason", sa.String(200)),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_until", AwareDateTime()),
        sa.PrimaryKeyConstraint("run_id", name="pk_journey_runs"),
    )
    op.create_index(
        "ix_journey_runs_customer_id_journey", "journey_runs", ["customer_id", "journey"]
    )
    op.create_index(
        "ix_journey_runs_due",
        "journey_runs",
        ["wake_at"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "uq_journey_runs_live",
        "journey_runs",
        ["journey", "customer_id", "run_key"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "outbox",
        sa.Column("outbox_id", Id, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(100)),
        sa.Column("template", sa.String(200)),
        sa.Column("variant", sa.String(200)),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", AwareDateTime()),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.Column("result", Json),
        sa.PrimaryKeyConstraint("outbox_id", name="pk_outbox"),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )
    op.create_index("ix_outbox_run_id", "outbox", ["run_id"])
    op.create_index(
        "ix_outbox_queued",
        "outbox",
        ["next_attempt_at"],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.create_table(
        "journey_steps",
        sa.Column("step_id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("edge", sa.String(200), nullable=False),
        sa.Column("at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("step_id", name="pk_journey_steps"),
    )
    op.create_index("ix_journey_steps_journey_node", "journey_steps", ["journey", "node"])
    op.create_index("ix_journey_steps_run_id", "journey_steps", ["run_id"])
    op.create_table(
        "journey_conversions",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("at", AwareDateTime(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_journey_conversions"),
    )
    op.create_index("ix_journey_conversions_journey_at", "journey_conversions", ["journey", "at"])


def downgrade() -> None:
    op.drop_index("ix_journey_conversions_journey_at", table_name="journey_conversions")
    op.drop_table("journey_conversions")
    op.drop_index("ix_journey_steps_run_id", table_name="journey_steps")
    op.drop_index("ix_journey_steps_journey_node", table_name="journey_steps")
    op.drop_table("journey_steps")
    op.drop_index("ix_outbox_queued", table_name="outbox")
    op.drop_index("ix_outbox_run_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("uq_journey_runs_live", table_name="journey_runs")
    op.drop_index("ix_journey_runs_due", table_name="journey_runs")
    op.drop_index("ix_journey_runs_customer_id_journey", table_name="journey_runs")
    op.drop_table("journey_runs")
    op.drop_table("journey_versions")
