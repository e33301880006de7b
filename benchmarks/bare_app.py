"""The baseline: the least a Flask endpoint can do for the same work.

``POST /select`` runs one indexed SQLAlchemy Core SELECT on the consents
table (the lookup a decision makes) and answers with the rows found;
``POST /insert`` inserts one consent row and one outbox row in one
transaction (the least a create must write). Same engine factory as the
service (SQLite WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` for writers;
PostgreSQL pool and timeouts), read-only checks in the cheapest mode each
backend offers (a deferred transaction on SQLite, autocommit on PostgreSQL),
no auth, no validation, no ORM: what is left is Flask, the driver and the
database. The benchmark divides the service's throughput by this one's.

Run under gunicorn: ``BENCH_DATABASE_URL=... gunicorn 'benchmarks.bare_app:create_app()'``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import Connection, select

from consent_service.db.models import Consent, OutboxEvent
from consent_service.db.session import make_engine
from consent_service.timefmt import format_instant, utcnow

ORGANIZATION_ENV = "BENCH_ORGANIZATION"
DATABASE_URL_ENV = "BENCH_DATABASE_URL"

_consents = Consent.__table__
_outbox = OutboxEvent.__table__
_LOOKUP = select(_consents.c.id, _consents.c.version, _consents.c.status, _consents.c.decision)


def create_app() -> Flask:
    """The two baseline endpoints over the database named by ``BENCH_DATABASE_URL``."""
    engine = make_engine(os.environ[DATABASE_URL_ENV])
    organization = os.environ.get(ORGANIZATION_ENV, "org-bench")
    is_sqlite = engine.dialect.name == "sqlite"
    app = Flask(__name__)

    @contextmanager
    def read_only() -> Iterator[Connection]:
        with engine.connect() as connection:
            if is_sqlite:
                connection = connection.execution_options(sqlite_begin="DEFERRED")
                with connection.begin():
                    yield connection
            else:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")

    @app.post("/select")
    def select_rows() -> Response:
        body: dict[str, Any] = request.get_json()
        with read_only() as connection:
            rows = connection.execute(
                _LOOKUP.where(
                    _consents.c.organization == organization,
                    _consents.c.patient_id == body["patient_id"],
                    _consents.c.practitioner_id == body["practitioner_id"],
                )
            ).all()
        found = [{"id": r.id, "version": r.version, "status": r.status} for r in rows]
        return Response(json.dumps({"rows": found}), mimetype="application/json")

    @app.post("/insert")
    def insert_rows() -> Response:
        body: dict[str, Any] = request.get_json()
        now = utcnow()
        consent_id = str(uuid.uuid4())
        row = {
            "id": consent_id,
            "organization": organization,
            "patient_id": body["patient_id"],
            "practitioner_id": body["practitioner_id"],
            "categories": body["categories"],
            "purposes": body["purposes"],
            "decision": body["decision"],
            "valid_from": now,
            "valid_until": None,
            "collection_method": body["collection"]["method"],
            "evidence_ref": None,
            "policy_version": None,
            "status": "active",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        payload = {**row, "valid_from": format_instant(now), "created_at": format_instant(now)}
        payload["updated_at"] = payload["created_at"]
        with engine.begin() as connection:
            connection.execute(_consents.insert(), row)
            connection.execute(
                _outbox.insert(),
                {
                    "event_id": str(uuid.uuid4()),
                    "organization": organization,
                    "consent_id": consent_id,
                    "consent_version": 1,
                    "type": "consent.granted",
                    "time": now,
                    "payload": json.dumps(payload, separators=(",", ":")),
                    "created_at": now,
                },
            )
        return Response(json.dumps({"id": consent_id}), status=201, mimetype="application/json")

    return app
