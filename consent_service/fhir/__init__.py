"""The FHIR R4 Consent interface over the same consents as ``/v1``."""

from __future__ import annotations

from flask import Flask

from consent_service.fhir import views


def register_fhir(app: Flask) -> None:
    """Mount ``/fhir/r4`` and its OperationOutcome errors on ``app``."""
    app.register_blueprint(views.blp)
    app.after_request(views.as_operation_outcome)
