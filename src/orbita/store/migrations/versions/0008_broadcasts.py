"""Broadcasts: one row per occurrence (a one-off send, or one time of a recurring one).

Recipients are outbox rows (run id `broadcast:<occurrence id>`), so the sender sends them
with every rule it applies to journeys' messages; the holdout's rows never leave it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id, Json

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("broadcast_id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("occurrence", sa.String(64), nullable=False),
        sa.Column("scheduled_at", AwareDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("definition", Json, nullable=False),
        sa.Column("audience", sa.Integer()),
        sa.Column("written_at", AwareDateTime()),
        sa.Column("decide_at", AwareDateTime()),
        sa.Column("decision", Json),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("broadcast_id", name="pk_broadcasts"),
        sa.UniqueConstraint("name", "occurrence", name="uq_broadcasts_name_occurrence"),
    )
    op.create_index("ix_broadcasts_state", "broadcasts", ["state"])


def downgrade() -> None:
    op.drop_index("ix_broadcasts_state", table_name="broadcasts")
    op.drop_table("broadcasts")
