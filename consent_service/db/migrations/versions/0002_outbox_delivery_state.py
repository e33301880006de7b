"""relay: outbox delivery state (attempts, last error, poison hold)

Revision ID: 0002
Revises: 0001

Additive only: three nullable-or-defaulted columns and a partial index, so
an API still on revision 0001 keeps writing rows while this is applied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column("held_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_outbox_events_held",
            ["consent_id"],
            unique=False,
            sqlite_where=sa.text("held_at IS NOT NULL"),
            postgresql_where=sa.text("held_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_events_held",
            sqlite_where=sa.text("held_at IS NOT NULL"),
            postgresql_where=sa.text("held_at IS NOT NULL"),
        )
        batch_op.drop_column("held_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
