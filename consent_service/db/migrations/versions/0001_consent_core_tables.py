"""consent core tables

Revision ID: 0001
Revises:
Create Date: 2026-11-29 22:37:15.429078
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.UniqueConstraint("key_prefix", name=op.f("uq_api_clients_key_prefix")),
    )
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_clients_organization"), ["organization"], unique=False
        )

    op.create_table(
        "consents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("practitioner_id", sa.String(length=128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("valid_from", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", consent_service.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("collection_method", sa.String(length=16), nullable=False),
        sa.Column("evidence_ref", sa.String(length=256), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('permit', 'deny')", name=op.f("ck_consents_decision")),
        sa.CheckConstraint(
            "status IN ('active', 'revoked', 'expired')", name=op.f("ck_consents_status")
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from", name=op.f("ck_consents_validity")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_consents_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index("ix_consents_expiry", ["status", "valid_until"], unique=False)
        batch_op.create_index(
            "ix_consents_lookup", ["organization", "patient_id", "practitioner_id"], unique=False
        )
        batch_op.create_index(
            "ix_consents_practitioner", ["organization", "practitioner_id", "status"], unique=False
        )

    op.create_table(
        "idempotency_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method_path", sa.String(length=512), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.JSON(), nullable=False),
        sa.Column("response_headers", sa.JSON(), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("client_id", "key", name=op.f("uq_idempotency_records_client_id_key")),
    )
    op.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("consent_id", sa.String(length=36), nullable=False),
        sa.Column("consent_version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("time", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "published_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_events_event_id")),
        sa.UniqueConstraint("position", name=op.f("uq_outbox_events_position")),
    )
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_events_org_position", ["organization", "position"], unique=False
        )
        batch_op.create_index(
            "ix_outbox_events_pending",
            ["position"],
            unique=False,
            sqlite_where=sa.text("published_at IS NULL"),
            postgresql_where=sa.text("published_at IS NULL"),
        )
        batch_op.create_index(
            "ix_outbox_events_unpositioned",
            ["id"],
            unique=False,
            sqlite_where=sa.text("position IS NULL"),
            postgresql_where=sa.text("position IS NULL"),
        )

    op.create_table(
        "consent_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("consent_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("practitioner_id", sa.String(length=128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("valid_from", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", consent_service.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("collection_method", sa.String(length=16), nullable=False),
        sa.Column("evidence_ref", sa.String(length=256), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column(
            "recorded_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.CheckConstraint(
            "change IN ('granted', 'amended', 'revoked', 'expired')",
            name=op.f("ck_consent_versions_change"),
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_consent_versions_consent_id_consents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_versions")),
        sa.UniqueConstraint(
            "consent_id", "version", name=op.f("uq_consent_versions_consent_id_version")
        ),
    )
    with op.batch_alter_table("consent_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_versions_lookup",
            ["organization", "patient_id", "practitioner_id", "consent_id", "version"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("consent_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_versions_lookup")

    op.drop_table("consent_versions")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_events_unpositioned",
            sqlite_where=sa.text("position IS NULL"),
            postgresql_where=sa.text("position IS NULL"),
        )
        batch_op.drop_index(
            "ix_outbox_events_pending",
            sqlite_where=sa.text("published_at IS NULL"),
            postgresql_where=sa.text("published_at IS NULL"),
        )
        batch_op.drop_index("ix_outbox_events_org_position")

    op.drop_table("outbox_events")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index("ix_consents_practitioner")
        batch_op.drop_index("ix_consents_lookup")
        batch_op.drop_index("ix_consents_expiry")

    op.drop_table("consents")
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_clients_organization"))

    op.drop_table("api_clients")
