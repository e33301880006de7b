"""consent-service: patients' consents to share health data, recorded, decided, streamed."""

from consent_service.app import create_app

__all__ = ["create_app"]
