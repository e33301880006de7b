"""web form: consent requests and policy texts (issue 4)

Revision ID: 0003
Revises: 0002

Seeds version ``2026-01`` of the consent text in French and English, so that
a fresh install can serve the form at once; later versions are added with
``consent-service policies add``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import consent_service.db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEED_VERSION = "2026-01"
SEED_TEXTS = {
    "fr": (
        "Consentement au partage de données de santé",
        "En acceptant, vous autorisez le professionnel de santé nommé sur cette page à recevoir "
        "les données de santé indiquées, uniquement pour les raisons indiquées et pendant la "
        "durée indiquée. Seules les données strictement nécessaires lui sont transmises.\n\n"
        "Votre accord est libre. Refuser ne change rien à vos soins ni à votre prise en "
        "charge.\n\n"
        "Vous pouvez retirer ce consentement à tout moment, aussi simplement que vous l'avez "
        "donné, depuis la page « Mes consentements ». Le retrait vaut pour l'avenir : il ne "
        "remet pas en cause les partages faits avant.\n\n"
        "Votre réponse est enregistrée avec sa date, la version de ce texte et la référence de "
        "la demande, pour pouvoir en apporter la preuve. Ni votre adresse IP ni votre "
        "navigateur ne sont enregistrés.\n\n"
        "Pour toute question, ou pour exercer vos droits sur vos données (accès, rectification, "
        "effacement), adressez-vous au cabinet qui vous a envoyé ce lien.",
    ),
    "en": (
        "Consent to share health data",
        "By agreeing, you allow the health professional named on this page to receive the "
        "health data listed, only for the reasons listed and for the period shown. Only the "
        "data strictly needed is sent to them.\n\n"
        "Your agreement is free. Refusing changes nothing in your care.\n\n"
        "You can withdraw this consent at any time, as easily as you gave it, from the "
        "\u201cMy consents\u201d page. Withdrawal applies from then on: it does not undo "
        "sharing that happened before.\n\n"
        "Your answer is recorded with its date, the version of this text and the reference of "
        "the request, so that it can be proven. Neither your IP address nor your browser is "
        "recorded.\n\n"
        "For any question, or to exercise your rights over your data (access, correction, "
        "erasure), contact the practice that sent you this link.",
    ),
}


def _digest(title: str, body: str) -> str:
    # Frozen copy of services.policies.text_digest: a migration must not
    # change meaning when the application code evolves.
    return hashlib.sha256(f"{title}\n\n{body}".encode()).hexdigest()


def upgrade() -> None:
    op.create_table(
        "policy_texts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("language IN ('fr', 'en')", name=op.f("ck_policy_texts_language")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_texts")),
        sa.UniqueConstraint("version", "language", name=op.f("uq_policy_texts_version_language")),
    )
    op.create_table(
        "consent_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization", sa.String(length=64), nullable=False),
        sa.Column("organization_name", sa.String(length=128), nullable=True),
        sa.Column("requested_by", sa.String(length=160), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("practitioner_id", sa.String(length=128), nullable=False),
        sa.Column("practitioner_name", sa.String(length=128), nullable=False),
        sa.Column("practitioner_profession", sa.String(length=128), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("valid_until", consent_service.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_for_days", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", consent_service.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("consent_id", sa.String(length=36), nullable=True),
        sa.Column("text_version", sa.String(length=32), nullable=True),
        sa.Column("text_language", sa.String(length=2), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=True),
        sa.CheckConstraint("language IN ('fr', 'en')", name=op.f("ck_consent_requests_language")),
        sa.CheckConstraint(
            "status IN ('pending', 'granted', 'refused', 'expired')",
            name=op.f("ck_consent_requests_status"),
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_for_days IS NULL",
            name=op.f("ck_consent_requests_one_duration"),
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.id"], name=op.f("fk_consent_requests_consent_id_consents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_requests")),
    )
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.create_index("ix_consent_requests_expiry", ["status", "expires_at"], unique=False)
        batch_op.create_index(
            "ix_consent_requests_practitioner", ["organization", "practitioner_id"], unique=False
        )

    policy_texts = sa.table(
        "policy_texts",
        sa.column("version", sa.String),
        sa.column("language", sa.String),
        sa.column("title", sa.String),
        sa.column("body", sa.Text),
        sa.column("sha256", sa.String),
        sa.column("created_at", consent_service.db.base.UTCDateTime(timezone=True)),
    )
    seeded_at = datetime(2026, 1, 1, tzinfo=UTC)
    op.bulk_insert(
        policy_texts,
        [
            {
                "version": SEED_VERSION,
                "language": language,
                "title": title,
                "body": body,
                "sha256": _digest(title, body),
                "created_at": seeded_at,
            }
            for language, (title, body) in SEED_TEXTS.items()
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_requests_practitioner")
        batch_op.drop_index("ix_consent_requests_expiry")

    op.drop_table("consent_requests")
    op.drop_table("policy_texts")
