"""enforcement receipts: what each subscriber has applied, per consent

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC = consent_service.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriber_receipts",
        sa.Column("subscriber_id", sa.String(length=36), nullable=False),
        sa.Column("consent_id", sa.String(length=36), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("applied_version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("applied_at", UTC, nullable=False),
        sa.Column("acknowledged_at", UTC, nullable=False),
        sa.CheckConstraint(
            "applied_version >= 1",
            name=op.f("ck_subscriber_receipts_applied_version_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["consents.id"],
            name=op.f("fk_subscriber_receipts_consent_id_consents"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["api_clients.id"],
            name=op.f("fk_subscriber_receipts_subscriber_id_api_clients"),
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "consent_id", name=op.f("pk_subscriber_receipts")),
    )
    op.create_index("ix_subscriber_receipts_consent", "subscriber_receipts", ["consent_id"])
    op.create_index(
        "ix_subscriber_receipts_org_subscriber",
        "subscriber_receipts",
        ["organization", "subscriber_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_subscriber_receipts_org_subscriber", table_name="subscriber_receipts")
    op.drop_index("ix_subscriber_receipts_consent", table_name="subscriber_receipts")
    op.drop_table("subscriber_receipts")
