"""Settings.from_env: defaults, normalisation, and one message naming the variable per bad value."""

from __future__ import annotations

import pytest

from consent_service.config import DEFAULT_CATEGORIES, ConfigError, Settings

KEY = "k" * 32


def from_env(**variables: str) -> Settings:
    return Settings.from_env({"CONSENT_SECRET_KEYS": KEY, **variables})


def test_defaults() -> None:
    settings = from_env()
    assert settings.database_url == "sqlite:///consent.db"
    assert settings.kafka_bootstrap_servers == ()
    assert settings.kafka_topic == "consent.events"
    assert settings.categories == DEFAULT_CATEGORIES
    assert settings.secret_keys == (KEY,)


def test_plain_postgresql_url_gets_the_psycopg_driver() -> None:
    settings = from_env(CONSENT_DATABASE_URL="postgresql://u:p%40ss@db:5432/consent")
    assert settings.database_url == "postgresql+psycopg://u:p%40ss@db:5432/consent"


def test_lists_are_split_and_trimmed() -> None:
    settings = from_env(
        CONSENT_KAFKA_BOOTSTRAP_SERVERS=" a:9092, b:9092 ,",
        CONSENT_SECRET_KEYS=f"{KEY}, {'n' * 20}",
        CONSENT_CATEGORIES="x-rays,notes",
    )
    assert settings.kafka_bootstrap_servers == ("a:9092", "b:9092")
    assert settings.secret_keys == (KEY, "n" * 20)
    assert settings.categories == ("x-rays", "notes")


def test_missing_secret_key_gives_a_random_dev_key() -> None:
    first, second = Settings.from_env({}), Settings.from_env({})
    assert len(first.secret_keys) == 1
    assert len(first.secret_keys[0]) >= 32
    assert first.secret_keys != second.secret_keys


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONSENT_DATABASE_URL", "not a url"),
        ("CONSENT_DATABASE_URL", "mysql://u@h/db"),
        ("CONSENT_DATABASE_URL", ""),
        ("CONSENT_DATABASE_URL", "sqlite+nosuchdriver:///x.db"),
        ("CONSENT_DATABASE_URL", "postgresql+nosuchdriver://u@h/db"),
        ("CONSENT_KAFKA_TOPIC_MODE", "sometimes"),
        ("CONSENT_KAFKA_TOPIC", "bad topic!"),
        ("CONSENT_KAFKA_TOPIC", ""),
        ("CONSENT_SECRET_KEYS", "short"),
        ("CONSENT_CATEGORIES", "Upper Case"),
        ("CONSENT_CATEGORIES", ","),
        ("CONSENT_PURPOSES", "a" * 65),
        ("CONSENT_MAX_BODY_BYTES", "lots"),
        ("CONSENT_MAX_BODY_BYTES", "0"),
        ("CONSENT_OUTBOX_LAG_THRESHOLD_SECONDS", "-5"),
    ],
)
def test_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(**{variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


OIDC = {"CONSENT_OIDC_ISSUER": "https://idp.example/realms/x", "CONSENT_OIDC_AUDIENCE": "api"}


def test_oidc_is_off_unless_configured_and_defaults_its_claims() -> None:
    assert from_env().oidc is None
    oidc = from_env(**OIDC).oidc
    assert oidc is not None
    assert (oidc.issuer, oidc.audience) == ("https://idp.example/realms/x", "api")
    assert oidc.jwks_url is None
    assert (oidc.org_claim, oidc.practitioner_claim, oidc.jwks_max_age_seconds) == (
        "org",
        "rpps",
        300,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONSENT_OIDC_ISSUER", "http://idp.example"),
        ("CONSENT_OIDC_ISSUER", "not a url"),
        ("CONSENT_OIDC_ISSUER", "https://idp.example/?q=1"),
        ("CONSENT_OIDC_AUDIENCE", "a" * 513),
        ("CONSENT_OIDC_JWKS_URL", "ftp://idp.example/keys"),
        ("CONSENT_OIDC_JWKS_URL", "http://10.0.0.1/keys"),
        ("CONSENT_OIDC_ORG_CLAIM", "has space"),
        ("CONSENT_OIDC_ORG_CLAIM", ""),
        ("CONSENT_OIDC_PRACTITIONER_CLAIM", "org"),
        ("CONSENT_OIDC_JWKS_MAX_AGE_SECONDS", "0"),
        ("CONSENT_OIDC_JWKS_MAX_AGE_SECONDS", "86401"),
    ],
)
def test_bad_oidc_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(**{**OIDC, variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("CONSENT_OIDC_ISSUER", "CONSENT_OIDC_AUDIENCE"),
        ("CONSENT_OIDC_AUDIENCE", "CONSENT_OIDC_ISSUER"),
    ],
)
def test_issuer_and_audience_go_together(given: str, missing: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(**{given: OIDC[given]})
    assert str(raised.value).startswith(f"{missing}: required")


def test_plain_http_key_sources_are_allowed_on_loopback_only() -> None:
    oidc = from_env(
        CONSENT_OIDC_ISSUER="http://127.0.0.1:8080",
        CONSENT_OIDC_AUDIENCE="api",
        CONSENT_OIDC_JWKS_URL="http://localhost:8080/jwks",
    ).oidc
    assert oidc is not None
    assert oidc.jwks_url == "http://localhost:8080/jwks"


MAIL = {
    "CONSENT_SMTP_URL": "smtp+starttls://mailer:p%40ss@smtp.example:587",
    "CONSENT_MAIL_FROM": "Cabinet du Parc <noreply@cabinet.example>",
    "CONSENT_PUBLIC_URL": "https://consent.example",
}


def test_mail_is_off_unless_an_smtp_url_is_set() -> None:
    assert not from_env().mail_configured
    settings = from_env(**MAIL)
    assert settings.mail_configured
    assert settings.mail_from == "Cabinet du Parc <noreply@cabinet.example>"
    assert settings.mail_keys == (KEY,), "addresses are sealed under the signing keys by default"
    assert "p%40ss" not in repr(settings)
    dedicated = from_env(**MAIL, CONSENT_MAIL_KEYS=f"{'m' * 32},{'n' * 32}")
    assert dedicated.mail_keys == ("m" * 32, "n" * 32)


@pytest.mark.parametrize(
    ("variable", "overrides"),
    [
        ("CONSENT_SMTP_URL", {"CONSENT_SMTP_URL": "http://smtp.example"}),
        ("CONSENT_SMTP_URL", {"CONSENT_SMTP_URL": "smtp://user@smtp.example"}),
        ("CONSENT_SMTP_URL", {"CONSENT_SMTP_URL": "smtps://smtp.example:99999"}),
        ("CONSENT_MAIL_FROM", {"CONSENT_MAIL_FROM": ""}),
        ("CONSENT_MAIL_FROM", {"CONSENT_MAIL_FROM": "a@example.org, b@example.org"}),
        ("CONSENT_MAIL_FROM", {"CONSENT_MAIL_FROM": "noreply@example.org\r\nBcc: x@y.org"}),
        ("CONSENT_PUBLIC_URL", {"CONSENT_PUBLIC_URL": ""}),
        ("CONSENT_MAIL_KEYS", {"CONSENT_MAIL_KEYS": "short"}),
        ("CONSENT_SMTP_CA_FILE", {"CONSENT_SMTP_CA_FILE": "/no/such/ca.pem"}),
    ],
)
def test_bad_mail_settings_name_their_variable(variable: str, overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(**{**MAIL, **overrides})
    message = str(raised.value)
    assert message.startswith(f"{variable}:") and "\n" not in message
    assert "p%40ss" not in message and "p@ss" not in message


def test_mail_needs_keys_shared_by_every_process() -> None:
    with pytest.raises(ConfigError, match=r"^CONSENT_SECRET_KEYS: required with CONSENT_SMTP_URL"):
        Settings.from_env(MAIL)
    assert Settings.from_env({**MAIL, "CONSENT_MAIL_KEYS": "m" * 32}).mail_keys == ("m" * 32,)
