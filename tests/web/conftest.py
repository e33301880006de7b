"""Helpers for the web form tests: ask for consent through the API, read forms back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": f"pat-{uuid.uuid4().hex[:12]}",
        "practitioner_id": "rpps:10003456789",
        "practitioner_name": "Dr Camille Martin",
        "practitioner_profession": "Orthodontiste",
        "organization_name": "Cabinet dentaire du Parc",
        "categories": ["dental-chart", "radiographs"],
        "purposes": ["care-coordination"],
        "valid_for_days": 365,
    }
    body.update(overrides)
    return body


Ask = Callable[..., dict[str, Any]]


@pytest.fixture
def ask(client: FlaskClient, auth: dict[str, str]) -> Ask:
    """Create a consent request through the API and return its JSON."""

    def make(**overrides: Any) -> dict[str, Any]:
        response = client.post("/v1/consent-requests", json=request_body(**overrides), headers=auth)
        assert response.status_code == 201, response.get_json()
        created: dict[str, Any] = response.get_json()
        return created

    return make


def local(url: str) -> str:
    """The path and query of an absolute link, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)

    def submission(self, **chosen: str) -> dict[str, str]:
        data = dict(self.fields)
        data.update(chosen)
        return data


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get")))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1].fields[values["name"]] = values.get("value", "")
        elif tag == "button" and self.forms and "name" in values:
            self.forms[-1].buttons.append((values["name"], values.get("value", "")))


def forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms
