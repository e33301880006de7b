"""The ``consent-service`` command: the root group in ``main``, one module per command group."""

from consent_service.cli.main import main

__all__ = ["main"]
