"""The per-app state that views reach: settings and database."""

from __future__ import annotations

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
    """The read-only connection the auth check opened; open while the view runs.

    A check that only reads (a decision) reads here instead of checking out
    a connection of its own; on SQLite it also sees the same snapshot as the
    key check.
    """
    found: Connection = g.read_connection
    return found


def actor() -> Actor:
    caller = principal()
    return Actor(name=f"client:{caller.client_id}", organization=caller.organization)
