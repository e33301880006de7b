"""Domain errors; the API layer maps each to its HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    title = "Request cannot be processed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    title = "Not found"


class Conflict(DomainError):
    """The resource is not in a state that allows the change (e.g. not active)."""

    title = "Conflict"


class StaleVersion(DomainError):
    """The caller's version is not the current one any more."""

    title = "Precondition failed"

    def __init__(self, detail: str, *, current_version: int | None = None) -> None:
        super().__init__(detail)
        self.current_version = current_version


class InvalidConsent(DomainError):
    """A value the schema accepted breaks a domain rule; ``errors`` maps field to messages."""

    title = "Validation failed"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors
