"""Alembic environment: runs against the connection or URL the caller configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

# Importing the models registers every table (core, web form, audit) on Base.metadata.
from consent_service.db import models  # noqa: F401
from consent_service.db.base import Base
from consent_service.db.session import make_engine

target_metadata = Base.metadata
config = context.config


def run(connection: Connection) -> None:
    is_postgres = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=not is_postgres,
        transaction_per_migration=True,
    )
    if is_postgres:
        # Never queue behind a long transaction holding a table lock for ever.
        connection.exec_driver_sql("SET lock_timeout = '10s'")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as new_connection:
        run(new_connection)
    engine.dispose()
