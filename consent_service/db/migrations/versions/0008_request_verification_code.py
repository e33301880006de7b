"""consent requests: a code handed over by a second channel, and the locked status

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC = consent_service.db.base.UTCDateTime(timezone=True)
OLD_STATUSES = "status IN ('pending', 'granted', 'refused', 'expired')"
NEW_STATUSES = "status IN ('pending', 'granted', 'refused', 'expired', 'locked')"


def upgrade() -> None:
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification_code_hash", sa.String(length=64)))
        batch_op.add_column(
            sa.Column(
                "verification_failures", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("verification_checked_at", UTC))
        batch_op.drop_constraint(op.f("ck_consent_requests_status"), type_="check")
        batch_op.create_check_constraint("status", NEW_STATUSES)


def downgrade() -> None:
    op.execute("UPDATE consent_requests SET status = 'expired' WHERE status = 'locked'")
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_consent_requests_status"), type_="check")
        batch_op.create_check_constraint("status", OLD_STATUSES)
        batch_op.drop_column("verification_checked_at")
        batch_op.drop_column("verification_failures")
        batch_op.drop_column("verification_code_hash")
