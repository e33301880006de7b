"""The per-app state that views reach: settings and database."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy import Connection

from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.services.clients import Principal
from consent_service.services.consents import Actor


@dataclass(frozen=True)
class ServiceState:
    settings: Settings
    database: Database


def state() -> ServiceState:
    found: ServiceState = current_app.extensions["consent_service"]
    return found


def principal() -> Principal:
    """The authenticated caller; set by the auth check before any view runs."""
    found: Principal = g.principal
    return found


def read_connection() -> Connection:
    """The request's read-only connection, opened on first use, closed by the auth check.

    The key check (when the key is not in the worker's cache) and a check
    that only reads (a decision) share it: one pool checkout per request, and
    on SQLite one snapshot. A request that needs no read (a write whose key
    was cached) checks out nothing here.
    """
    found: Connection | None = g.get("read_connection")
    if found is None:
        scope: ExitStack = g.read_scope
        found = scope.enter_context(state().database.read_only())
        g.read_connection = found
    return found


def actor() -> Actor:
    caller = principal()
    return Actor(name=caller.actor, organization=caller.organization)
