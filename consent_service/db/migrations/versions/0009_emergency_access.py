"""emergency access: a practitioner's time-boxed access to one patient

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC = consent_service.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "emergency_accesses",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("practitioner_id", sa.String(length=128), nullable=False),
        sa.Column("justification", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("opened_by", sa.String(length=160), nullable=False),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.Column("closed_by", sa.String(length=160), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'ended', 'expired')", name=op.f("ck_emergency_accesses_status")
        ),
        sa.CheckConstraint("version IN (1, 2)", name=op.f("ck_emergency_accesses_version")),
        sa.CheckConstraint("expires_at > opened_at", name=op.f("ck_emergency_accesses_window")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emergency_accesses")),
    )
    op.create_index(
        "ix_emergency_accesses_pair",
        "emergency_accesses",
        ["organization", "patient_id", "practitioner_id"],
    )
    op.create_index(
        "ix_emergency_accesses_open",
        "emergency_accesses",
        ["expires_at"],
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_emergency_accesses_open", table_name="emergency_accesses")
    op.drop_index("ix_emergency_accesses_pair", table_name="emergency_accesses")
    op.drop_table("emergency_accesses")
