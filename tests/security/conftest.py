"""Fixtures of the security suite: audit chains start afresh with each emptied database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from consent_service import audit
from consent_service.audit import writer as audit_writer
from consent_service.db.audit_models import AuditEntry
from consent_service.db.session import Database


@pytest.fixture(autouse=True)
def fresh_audit_chains() -> Iterator[None]:
    """The tables are emptied after each test; this process's chain heads must go too."""
    audit.reset_chains()
    yield
    audit.reset_chains()


def audit_rows(database: Database, **where: Any) -> list[AuditEntry]:
    """Audit entries in append order, optionally filtered by column values.

    Reads and decisions are appended by this process's batch writer a few
    milliseconds after their answer: wait for it first.
    """
    assert audit_writer.flush(timeout=10)
    query = select(AuditEntry).order_by(AuditEntry.id)
    for name, value in where.items():
        query = query.where(getattr(AuditEntry, name) == value)
    with database.reading() as session:
        return list(session.scalars(query))
