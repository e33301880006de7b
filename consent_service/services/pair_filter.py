"""The WHERE clause every per-pair read shares: one organization, patient and practitioner.

Bound parameters (``organization``, ``patient_id``, ``practitioner_id``), so
a statement built once at import runs with a dict per call, on each table's
(organization, patient, practitioner) index.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, FromClause, and_, bindparam


def pair_clause(table: FromClause) -> ColumnElement[bool]:
    """``table``'s rows of the bound organization, patient and practitioner."""
    return and_(
        table.c.organization == bindparam("organization"),
        table.c.patient_id == bindparam("patient_id"),
        table.c.practitioner_id == bindparam("practitioner_id"),
    )
