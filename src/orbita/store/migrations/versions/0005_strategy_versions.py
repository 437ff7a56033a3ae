"""Applied strategy versions and the workspace's named values (the simulated clock).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import AwareDateTime, Json

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "strategy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("applied_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_strategy_versions"),
    )
    op.create_table(
        "workspace_values",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", Json, nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_workspace_values"),
    )


def downgrade() -> None:
    op.drop_table("workspace_values")
    op.drop_table("strategy_versions")
