"""mail queue: invitations and confirmations to patients, addresses sealed

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC = consent_service.db.base.UTCDateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mail_messages",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("sealed_address", sa.String(length=512), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_mail_messages_attempts")),
        sa.CheckConstraint(
            "kind IN ('invitation', 'confirmation')", name=op.f("ck_mail_messages_kind")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'failed')", name=op.f("ck_mail_messages_status")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["consent_requests.id"],
            name=op.f("fk_mail_messages_request_id_consent_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_messages")),
        sa.UniqueConstraint("request_id", "kind", name=op.f("uq_mail_messages_request_id_kind")),
    )
    op.create_index("ix_mail_messages_due", "mail_messages", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_mail_messages_due", table_name="mail_messages")
    op.drop_table("mail_messages")
