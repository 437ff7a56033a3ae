"""Bounces and complaints received (deduplicated), and conversions attributed to messages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounces",
        sa.Column("bounce_id", Id, primary_key=True, autoincrement=True),
        sa.Column("report_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("outbox_id", sa.BigInteger()),
        sa.Column("idempotency_key", sa.String(64)),
        sa.Column("status", sa.String(16)),
        sa.Column("diagnostic", sa.String(1000), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bounce_id", name="pk_bounces"),
        sa.UniqueConstraint("report_key", name="uq_bounces_report_key"),
    )
    op.create_index("ix_bounces_address_at", "bounces", ["address", "at"])
    op.create_table(
        "attributions",
        sa.Column("attribution_id", Id, primary_key=True, autoincrement=True),
        sa.Column("goal_message_id", sa.String(255), nullable=False),
        sa.Column("touch_key", sa.String(64), nullable=False),
        sa.Column("model", sa.String(16), nullable=False),
        sa.Column("journey", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("outbox_id", sa.BigInteger()),
        sa.Column("node", sa.String(200)),
        sa.Column("template", sa.String(200)),
        sa.Column("variant", sa.String(200)),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("goal_event", sa.String(200), nullable=False),
        sa.Column("touched_at", AwareDateTime(), nullable=False),
        sa.Column("converted_at", AwareDateTime(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("attribution_id", name="pk_attributions"),
        sa.UniqueConstraint(
            "goal_message_id", "touch_key", name="uq_attributions_goal_message_id_touch_key"
        ),
    )
    op.create_index(
        "ix_attributions_journey_converted_at", "attributions", ["journey", "converted_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_attributions_journey_converted_at", table_name="attributions")
    op.drop_table("attributions")
    op.drop_index("ix_bounces_address_at", table_name="bounces")
    op.drop_table("bounces")
