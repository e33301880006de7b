"""Every PostgreSQL connection of the service bounds a server that stops answering.

A vanished host or a firewall dropping packets leaves a socket open and
silent; without keepalives and ``tcp_user_timeout`` a request would wait on
it until gunicorn kills the worker. Packet loss cannot be provoked on the
loopback without privileges the suite does not assume, so this checks that
libpq received the bounds on the service's real connections (the request
engine and the audit engine), and that the server settings still arrive.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from consent_service.audit import trail as audit_trail
from consent_service.db.session import Database

pytestmark = pytest.mark.postgres

BOUNDS = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


@pytest.fixture
def postgres(database_urls: dict[str, str]) -> Iterator[Database]:
    if "postgresql" not in database_urls:
        pytest.skip("CONSENT_TEST_POSTGRES_URL is not set")
    database = Database(database_urls["postgresql"])
    yield database
    audit_trail.release(database)
    database.dispose()


def libpq_parameters(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        parameters: dict[str, str] = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        return parameters


def server_setting(engine: Engine, name: str) -> str:
    with engine.connect() as connection:
        return str(connection.execute(text(f"SHOW {name}")).scalar_one())


def test_request_connections_bound_a_silent_server(postgres: Database) -> None:
    assert libpq_parameters(postgres.engine).items() >= BOUNDS.items()
    assert server_setting(postgres.engine, "statement_timeout") == "10s"


def test_audit_connections_bound_a_silent_server(postgres: Database) -> None:
    engine = audit_trail.audit_engine(postgres)
    assert libpq_parameters(engine).items() >= BOUNDS.items()
    assert server_setting(engine, "statement_timeout") == "10s"
    assert server_setting(engine, "synchronous_commit") == "off"
