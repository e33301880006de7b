"""An answer link past its request's deadline hands out no manage link; lifetimes are stated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.services import links
from consent_service.timefmt import utcnow
from tests.web.conftest import Ask, Form, forms, local

MANAGE_PATH = "/consent/mine?"


def _answered(client: FlaskClient, ask: Ask, language: str) -> tuple[dict[str, Any], Form, str]:
    created = ask(language=language)
    page = client.get(local(created["form_url"]))
    (form,) = forms(page.get_data(as_text=True))
    answered = client.post(form.action, data=form.submission(answer="grant"))
    assert answered.status_code == 200
    return created, form, answered.get_data(as_text=True)


def _past_deadline(database: Database, request_id: str) -> None:
    with database.transaction() as session:
        session.execute(
            update(ConsentRequest)
            .where(ConsentRequest.id == request_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


@pytest.mark.parametrize(
    ("language", "lifetime", "answered_title"),
    [("fr", "pendant 90 jours", "Vous avez déjà répondu"), ("en", "for 90 days", "already")],
)
def test_the_manage_link_lifetime_is_stated_and_not_renewed_after_the_deadline(
    client: FlaskClient,
    ask: Ask,
    database: Database,
    language: str,
    lifetime: str,
    answered_title: str,
) -> None:
    assert links.MAX_AGE[links.MANAGE] == timedelta(days=90)
    created, form, answered = _answered(client, ask, language)
    assert MANAGE_PATH in answered and lifetime in answered

    # Before the deadline, reopening the answer link gives the manage link again.
    again = client.get(local(created["form_url"]))
    assert again.status_code == 409
    assert MANAGE_PATH in again.get_data(as_text=True)
    assert lifetime in again.get_data(as_text=True)

    _past_deadline(database, created["id"])
    late = client.get(local(created["form_url"]))
    html = late.get_data(as_text=True)
    assert late.status_code == 409
    assert answered_title in html
    assert MANAGE_PATH not in html

    # A replayed answer after the deadline mints none either.
    replayed = client.post(form.action, data=form.submission(answer="grant"))
    assert replayed.status_code == 409
    assert MANAGE_PATH not in replayed.get_data(as_text=True)
