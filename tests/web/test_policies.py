"""Versioned consent texts: service rules and the ``consent-service policies`` CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import delete

from consent_service.cli import main
from consent_service.db.request_models import PolicyText
from consent_service.db.session import Database
from consent_service.services import policies
from consent_service.services.errors import Conflict, InvalidConsent
from consent_service.timefmt import utcnow
from tests.web.conftest import Ask, forms, local

SEED = "2026-01"


@pytest.fixture
def cleanup(database: Database) -> object:
    """policy_texts survive between tests: remove what a test published."""
    yield
    with database.transaction() as session:
        session.execute(delete(PolicyText).where(PolicyText.version != SEED))


def test_the_seed_has_both_languages_with_their_hash(database: Database) -> None:
    with database.reading() as session:
        texts = {text.language: text for text in policies.list_policy_texts(session)}
    assert set(texts) == {"fr", "en"}
    for text in texts.values():
        assert text.version == SEED
        assert text.sha256 == policies.text_digest(text.title, text.body)


def test_a_new_version_is_shown_and_pinned(
    client: FlaskClient, ask: Ask, database: Database, cleanup: object
) -> None:
    created = ask()
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    with database.transaction() as session:
        added = policies.add_policy_text(
            session,
            version="2027-01",
            language="fr",
            title="Nouveau texte",
            body="Premier paragraphe.\r\n\r\nSecond paragraphe.",
            now=utcnow() + timedelta(seconds=1),
        )
    assert added.body == "Premier paragraphe.\n\nSecond paragraphe."
    # The patient who read 2026-01 agrees to 2026-01, not to what was published since.
    client.post(form.action, data=form.submission(answer="grant"))
    with database.reading() as session:
        assert policies.current_policy_text(session, language="fr").version == "2027-01"
        assert policies.current_policy_text(session, language="en").version == SEED
    fresh = ask()
    html = client.get(local(fresh["form_url"])).get_data(as_text=True)
    assert "Nouveau texte" in html and "Second paragraphe." in html


def test_versions_are_immutable_and_validated(database: Database, cleanup: object) -> None:
    with database.transaction() as session, pytest.raises(Conflict):
        policies.add_policy_text(
            session, version=SEED, language="fr", title="T", body="B", now=utcnow()
        )
    bad = [
        {"version": "has space"},
        {"version": "x" * 33},
        {"language": "de"},
        {"title": ""},
        {"title": "two\nlines"},
        {"body": "   "},
        {"body": "bell\x07"},
    ]
    for overrides in bad:
        values = {"version": "2030-01", "language": "fr", "title": "T", "body": "B", **overrides}
        with database.transaction() as session, pytest.raises(InvalidConsent):
            policies.add_policy_text(session, now=utcnow(), **values)


def test_cli_add_and_list(
    database: Database, cleanup: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", database.url)
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "policies",
            "add",
            "--version",
            "2028-02",
            "--language",
            "en",
            "--title",
            "Consent",
            "--body-file",
            "-",
        ],
        input="First paragraph.\n\nSecond one.\n",
    )
    assert added.exit_code == 0, added.output
    assert "published 2028-02 (en) sha256=" in added.output
    listed = runner.invoke(main, ["policies", "list", "--json"])
    rows = json.loads(listed.output)
    assert [(row["version"], row["language"]) for row in rows][-1] == ("2028-02", "en")
    assert rows[-1]["sha256"] == policies.text_digest("Consent", "First paragraph.\n\nSecond one.")
    again = runner.invoke(
        main,
        [
            "policies",
            "add",
            "--version",
            "2028-02",
            "--language",
            "en",
            "--title",
            "X",
            "--body-file",
            "-",
        ],
        input="Y",
    )
    assert again.exit_code == 1 and "already exists" in again.output
    plain = runner.invoke(main, ["policies", "list"])
    assert "2028-02  en" in plain.output
