"""Delivery: the sender's claim on outbox rows, attempts with reasons, suppressions, consent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CLAIMED = sa.text("status IN ('sending', 'committing')")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(200)))
        batch.add_column(sa.Column("claimed_until", AwareDateTime()))
        batch.add_column(sa.Column("sent_at", AwareDateTime()))
        batch.add_column(sa.Column("provider_id", sa.String(255)))
    op.create_index(
        "ix_outbox_claimed",
        "outbox",
        ["claimed_until"],
        sqlite_where=CLAIMED,
        postgresql_where=CLAIMED,
    )
    op.create_index("ix_outbox_customer_sent", "outbox", ["customer_id", "sent_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("attempt_id", Id, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", AwareDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_delivery_attempts"),
    )
    op.create_index("ix_delivery_attempts_outbox_id", "delivery_attempts", ["outbox_id"])
    op.create_index("ix_delivery_attempts_customer_id", "delivery_attempts", ["customer_id"])
    op.create_table(
        "suppressions",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "address", name="pk_suppressions"),
    )
    op.create_table(
        "consents",
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "channel", "topic", name="pk_consents"),
    )


def downgrade() -> None:
    op.drop_table("consents")
    op.drop_table("suppressions")
    op.drop_table("delivery_attempts")
    op.drop_index("ix_outbox_customer_sent", table_name="outbox")
    op.drop_index("ix_outbox_claimed", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        for name in ("provider_id", "sent_at", "claimed_until", "claimed_by"):
            batch.drop_column(name)
