"""Segment memberships and refreshes, lifecycle stage history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Id

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_memberships",
        sa.Column("segment", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("entered_at", AwareDateTime(), nullable=False),
        sa.Column("exited_at", AwareDateTime()),
        sa.PrimaryKeyConstraint(
            "segment", "customer_id", "entered_at", name="pk_segment_memberships"
        ),
    )
    op.create_table(
        "segment_refreshes",
        sa.Column("refresh_id", Id, primary_key=True, autoincrement=True),
        sa.Column("segment", sa.String(200), nullable=False),
        sa.Column("as_of", AwareDateTime(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("entered", sa.BigInteger(), nullable=False),
        sa.Column("exited", sa.BigInteger(), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("checksum", sa.BigInteger(), nullable=False),
        sa.Column("refreshed_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("refresh_id", name="pk_segment_refreshes"),
    )
    op.create_index("ix_segment_refreshes_segment_as_of", "segment_refreshes", ["segment", "as_of"])
    op.create_table(
        "stage_history",
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("entered_at", AwareDateTime(), nullable=False),
        sa.Column("stage", sa.String(200), nullable=False),
        sa.Column("exited_at", AwareDateTime()),
        sa.PrimaryKeyConstraint("customer_id", "entered_at", "stage", name="pk_stage_history"),
    )
    op.create_index("ix_stage_history_stage_exited_at", "stage_history", ["stage", "exited_at"])


def downgrade() -> None:
    op.drop_index("ix_stage_history_stage_exited_at", table_name="stage_history")
    op.drop_table("stage_history")
    op.drop_index("ix_segment_refreshes_segment_as_of", table_name="segment_refreshes")
    op.drop_table("segment_refreshes")
    op.drop_table("segment_memberships")
