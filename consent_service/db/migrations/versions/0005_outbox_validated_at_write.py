"""relay: outbox rows checked when written; NOTIFY at commit on PostgreSQL (issue 11)

The writer now checks each event against its JSON Schema before staging it
and sets ``validated``; the relay sends such rows' bytes without parsing
them again. Rows already in the outbox, and rows written by an API still on
revision 0004 during a rolling upgrade, get false and are checked by the
relay as before.

On PostgreSQL, a statement trigger on ``outbox_events`` sends
``NOTIFY consent_outbox`` (delivered at commit, once per transaction and
channel) so that the relay wakes as soon as an event is committed, without
a round trip in the writer.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("validated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION consent_outbox_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('consent_outbox', '');
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            """
            CREATE TRIGGER outbox_events_notify
            AFTER INSERT ON outbox_events
            FOR EACH STATEMENT EXECUTE FUNCTION consent_outbox_notify()
            """
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER outbox_events_notify ON outbox_events")
        op.execute("DROP FUNCTION consent_outbox_notify()")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_column("validated")
