"""Customers, identities, API keys and erasures.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id, Json

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(255)),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(64)),
        sa.Column("telegram_chat_id", sa.String(64)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("locale", sa.String(35)),
        sa.Column("traits", Json, nullable=False),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
        sa.UniqueConstraint("user_id", name="uq_customers_user_id"),
    )
    op.create_table(
        "identities",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("customer_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="pk_identities"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name="fk_identities_customer_id_customers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_identities_customer_id", "identities", ["customer_id"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "erasures",
        sa.Column("erasure_id", Id, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("removed", Json, nullable=False),
        sa.Column("erased_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("erasure_id", name="pk_erasures"),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("api_keys")
    op.drop_index("ix_identities_customer_id", table_name="identities")
    op.drop_table("identities")
    op.drop_table("customers")
