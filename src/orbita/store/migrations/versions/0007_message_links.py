"""Tracking: each sent message's links, recorded when it is rendered, so that a click can only
redirect to a URL that was in the message.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orbita.store.state import Json

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("links", Json))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("links")
