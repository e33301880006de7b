"""security: audit chain, checkpoints, API keys with rotation, rate counters (issue 5)

Existing keys move to ``api_keys`` with their unkeyed SHA-256 hash marked
``sha256$`` so that partners keep working; new keys get a keyed hash. The old
``api_clients.key_*`` columns become nullable here and are dropped in a later
release (add, backfill, then drop).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = consent_service.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("shard", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=36), nullable=True),
        sa.Column("organization", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("objects", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("shard", "seq", name=op.f("uq_audit_entries_shard_seq")),
    )
    op.create_index("ix_audit_entries_occurred_at", "audit_entries", ["occurred_at"])
    op.create_index(
        "ix_audit_entries_org_occurred_at", "audit_entries", ["organization", "occurred_at"]
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=96), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["api_clients.id"], name=op.f("fk_api_keys_client_id_api_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_client_id"), "api_keys", ["client_id"])
    op.create_table(
        "rate_limit_counters",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_counters")),
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )
    _copy_existing_keys()
    with op.batch_alter_table("api_clients") as batch_op:
        batch_op.alter_column("key_prefix", existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column("key_hash", existing_type=sa.String(length=128), nullable=True)


def _copy_existing_keys() -> None:
    bind = op.get_bind()
    clients = sa.table(
        "api_clients",
        sa.column("id", sa.String),
        sa.column("key_prefix", sa.String),
        sa.column("key_hash", sa.String),
        sa.column("created_at", UTC),
        sa.column("revoked_at", UTC),
    )
    keys = sa.table(
        "api_keys",
        sa.column("id", sa.String),
        sa.column("client_id", sa.String),
        sa.column("prefix", sa.String),
        sa.column("key_hash", sa.String),
        sa.column("created_at", UTC),
        sa.column("revoked_at", UTC),
    )
    rows = bind.execute(sa.select(clients).where(clients.c.key_prefix.is_not(None))).all()
    if rows:
        bind.execute(
            keys.insert(),
            [
                {
                    "id": str(uuid.uuid4()),
                    "client_id": row.id,
                    "prefix": row.key_prefix,
                    "key_hash": f"sha256${row.key_hash}",
                    "created_at": row.created_at,
                    "revoked_at": row.revoked_at,
                }
                for row in rows
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("api_clients") as batch_op:
        batch_op.alter_column("key_prefix", existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column("key_hash", existing_type=sa.String(length=128), nullable=False)
    op.drop_table("rate_limit_counters")
    op.drop_index(op.f("ix_api_keys_client_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_entries_org_occurred_at", table_name="audit_entries")
    op.drop_index("ix_audit_entries_occurred_at", table_name="audit_entries")
    op.drop_table("audit_entries")
