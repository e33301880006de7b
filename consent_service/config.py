"""One ``Settings`` object, read from ``CONSENT_*`` environment variables.

A bad value stops start-up with one line naming the variable, rather than a
traceback from deep inside a request.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

log = logging.getLogger(__name__)

DEFAULT_CATEGORIES = (
    "identity",
    "medical-history",
    "dental-chart",
    "radiographs",
    "treatment-plan",
    "prescriptions",
    "billing",
)
DEFAULT_PURPOSES = ("care-coordination", "referral", "second-opinion", "emergency")
TOPIC_MODES = ("single", "per-organization")
# Used only when CONSENT_API_KEY_PEPPER / CONSENT_AUDIT_KEYS are unset, with a
# warning: constant, so that the CLI and every worker agree in development.
DEV_API_KEY_PEPPER = "development-api-key-pepper-not-secret"
DEV_AUDIT_KEY = "development-audit-key-not-secret"
# Set by ``serve`` for its gunicorn workers once it has warned: they stay quiet.
DEVELOPMENT_KEYS_WARNED = "CONSENT_DEVELOPMENT_KEYS_WARNED"
DEVELOPMENT_KEY_WARNINGS = {
    "CONSENT_SECRET_KEYS": (
        "CONSENT_SECRET_KEYS is unset: using a random development key; "
        "signed links will break at restart. Never run like this in production."
    ),
    "CONSENT_API_KEY_PEPPER": (
        "CONSENT_API_KEY_PEPPER is unset: using a public development key. Never in production."
    ),
    "CONSENT_AUDIT_KEYS": (
        "CONSENT_AUDIT_KEYS is unset: using a public development key. Never in production."
    ),
}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class OidcSettings:
    """Where OpenID Connect access tokens come from, and which claims say what.

    ``jwks_url`` None: found through the issuer's discovery document.
    """

    issuer: str
    audience: str
    jwks_url: str | None = None
    org_claim: str = "org"
    practitioner_claim: str = "rpps"
    # How long fetched signing keys are trusted before they are fetched again.
    jwks_max_age_seconds: int = 300


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///consent.db"
    kafka_bootstrap_servers: tuple[str, ...] = ()
    kafka_topic: str = "consent.events"
    kafka_topic_mode: str = "single"
    secret_keys: tuple[str, ...] = field(default_factory=tuple)
    rate_limits: str = "default"
    rate_limit_storage: str = "database"
    api_key_peppers: tuple[str, ...] = (DEV_API_KEY_PEPPER,)
    audit_keys: tuple[str, ...] = (DEV_AUDIT_KEY,)
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    purposes: tuple[str, ...] = DEFAULT_PURPOSES
    max_body_bytes: int = 256 * 1024
    outbox_lag_threshold_seconds: float = 60.0
    # A revocation not acknowledged by every subscriber within this is late.
    enforcement_sla_seconds: float = 60.0
    public_url: str | None = None
    kafka_partitions: int = 12
    kafka_replication: int = 3
    # Variables left unset, so that a development value stands in (never in production).
    development_keys: tuple[str, ...] = ()
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    relay_metrics_port: int = 9102
    audit_batch_ms: int = 25
    api_key_cache_ms: int = 1000
    # None: only API keys authenticate.
    oidc: OidcSettings | None = None
    # Email to patients (consent requests); None: no mail, `delivery` is refused.
    smtp_url: str | None = field(default=None, repr=False)
    smtp_ca_file: str | None = None
    mail_from: str | None = None
    # Keys sealing patient addresses at rest: CONSENT_MAIL_KEYS, else CONSENT_SECRET_KEYS.
    mail_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def mail_configured(self) -> bool:
        return self.smtp_url is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``CONSENT_*`` variable."""
        env = os.environ if environ is None else environ
        database_url = env.get("CONSENT_DATABASE_URL", cls.database_url).strip()
        try:
            url = make_url(database_url)
        except ArgumentError as exc:
            raise ConfigError(f"CONSENT_DATABASE_URL: not a database URL ({exc})") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError("CONSENT_DATABASE_URL: only sqlite:// and postgresql:// URLs")
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ConfigError(f"CONSENT_DATABASE_URL: unknown driver {url.drivername!r}") from None
        if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
            database_url = url.set(drivername="postgresql+psycopg").render_as_string(
                hide_password=False
            )

        topic_mode = env.get("CONSENT_KAFKA_TOPIC_MODE", cls.kafka_topic_mode).strip()
        if topic_mode not in TOPIC_MODES:
            raise ConfigError(f"CONSENT_KAFKA_TOPIC_MODE: must be one of {', '.join(TOPIC_MODES)}")

        keys = _split(env.get("CONSENT_SECRET_KEYS", ""))
        if not keys:
            keys = (secrets.token_urlsafe(32),)
        elif any(len(key) < 16 for key in keys):
            raise ConfigError("CONSENT_SECRET_KEYS: every key must be at least 16 characters")

        rate_limits = env.get("CONSENT_RATE_LIMITS", cls.rate_limits).strip() or "default"
        _check_rate_limits(rate_limits)
        return cls(
            database_url=database_url,
            kafka_bootstrap_servers=_split(env.get("CONSENT_KAFKA_BOOTSTRAP_SERVERS", "")),
            kafka_topic=_topic(env.get("CONSENT_KAFKA_TOPIC", cls.kafka_topic)),
            kafka_topic_mode=topic_mode,
            secret_keys=keys,
            rate_limits=rate_limits,
            rate_limit_storage=env.get("CONSENT_RATE_LIMIT_STORAGE", "").strip() or "database",
            api_key_peppers=_server_keys(env, "CONSENT_API_KEY_PEPPER", DEV_API_KEY_PEPPER),
            audit_keys=_server_keys(env, "CONSENT_AUDIT_KEYS", DEV_AUDIT_KEY),
            categories=_vocabulary(env, "CONSENT_CATEGORIES", DEFAULT_CATEGORIES),
            purposes=_vocabulary(env, "CONSENT_PURPOSES", DEFAULT_PURPOSES),
            max_body_bytes=_positive_int(env, "CONSENT_MAX_BODY_BYTES", cls.max_body_bytes),
            outbox_lag_threshold_seconds=float(
                _positive_int(env, "CONSENT_OUTBOX_LAG_THRESHOLD_SECONDS", 60)
            ),
            enforcement_sla_seconds=float(
                _positive_int(env, "CONSENT_ENFORCEMENT_SLA_SECONDS", 60)
            ),
            public_url=_public_url(env.get("CONSENT_PUBLIC_URL", "")),
            audit_batch_ms=_audit_batch_ms(
                env.get("CONSENT_AUDIT_BATCH_MS", str(cls.audit_batch_ms))
            ),
            api_key_cache_ms=_api_key_cache_ms(
                env.get("CONSENT_API_KEY_CACHE_MS", str(cls.api_key_cache_ms))
            ),
            oidc=_oidc(env),
            development_keys=tuple(
                name for name in DEVELOPMENT_KEY_WARNINGS if not env.get(name, "").strip()
            ),
            **_kafka_client_settings(env),
            **_mail_settings(env, keys),
        )

    def warn_development_keys(self, *names: str) -> None:
        """Log one warning per key among ``names`` (all when none given) left to its dev value.

        Called by the processes that use the keys, once each: ``serve`` before
        its workers start (not every worker), a CLI command for the key it
        uses; never by those that use none (the relay, the audit jobs for the
        signing key).
        """
        for name in self.development_keys:
            if not names or name in names:
                log.warning(DEVELOPMENT_KEY_WARNINGS[name])


def _server_keys(env: Mapping[str, str], name: str, dev_value: str) -> tuple[str, ...]:
    """Keys newest first (the first signs, all verify); a constant development key if unset."""
    keys = _split(env.get(name, ""))
    if not keys:
        return (dev_value,)
    if any(len(key) < 32 for key in keys):
        raise ConfigError(f"{name}: every key must be at least 32 characters")
    return keys


def _check_rate_limits(value: str) -> None:
    # Imported here: the rate-limit module pulls in the `limits` library.
    from consent_service.ratelimits import parse_rate_limits

    try:
        parse_rate_limits(value)
    except ValueError as error:
        raise ConfigError(f"CONSENT_RATE_LIMITS: {error}") from None


def _public_url(value: str) -> str | None:
    """The service's public base address (scheme, host, optional path), or None."""
    value = value.strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("CONSENT_PUBLIC_URL: an http(s) address such as https://consent.example")
    return value


MAX_AUDIT_BATCH_MS = 1000


def _audit_batch_ms(raw: str) -> int:
    """How long read and decision audit entries wait to share a commit; 0: none, in the request."""
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_AUDIT_BATCH_MS:
        raise ConfigError(
            f"CONSENT_AUDIT_BATCH_MS: milliseconds from 0 (append in the request) "
            f"to {MAX_AUDIT_BATCH_MS}, got {raw!r}"
        )
    return value


MAX_API_KEY_CACHE_MS = 1000


def _api_key_cache_ms(raw: str) -> int:
    """How long a worker trusts a key it verified; 0: every request asks the database."""
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_API_KEY_CACHE_MS:
        raise ConfigError(
            f"CONSENT_API_KEY_CACHE_MS: milliseconds from 0 (check every request) "
            f"to {MAX_API_KEY_CACHE_MS}, got {raw!r}"
        )
    return value


CLAIM_NAME = re.compile(r"^[A-Za-z0-9_:/.-]{1,128}$")
MAX_JWKS_MAX_AGE_SECONDS = 86400


def _oidc(env: Mapping[str, str]) -> OidcSettings | None:
    """OpenID Connect settings, or None when neither issuer nor audience is set."""
    issuer = env.get("CONSENT_OIDC_ISSUER", "").strip()
    audience = env.get("CONSENT_OIDC_AUDIENCE", "").strip()
    if not issuer and not audience:
        return None
    if not issuer:
        raise ConfigError("CONSENT_OIDC_ISSUER: required with CONSENT_OIDC_AUDIENCE")
    if not audience or len(audience) > 512:
        raise ConfigError("CONSENT_OIDC_AUDIENCE: required with CONSENT_OIDC_ISSUER, 1-512 chars")
    _key_source_url("CONSENT_OIDC_ISSUER", issuer)
    jwks_url = env.get("CONSENT_OIDC_JWKS_URL", "").strip() or None
    if jwks_url is not None:
        _key_source_url("CONSENT_OIDC_JWKS_URL", jwks_url)
    claims = {}
    for name, default in (("ORG_CLAIM", "org"), ("PRACTITIONER_CLAIM", "rpps")):
        value = env.get(f"CONSENT_OIDC_{name}", default).strip()
        if not CLAIM_NAME.match(value):
            raise ConfigError(f"CONSENT_OIDC_{name}: a claim name of 1-128 [A-Za-z0-9_:/.-]")
        claims[name.lower()] = value
    if claims["org_claim"] == claims["practitioner_claim"]:
        raise ConfigError("CONSENT_OIDC_PRACTITIONER_CLAIM: must differ from the org claim")
    max_age = _positive_int(env, "CONSENT_OIDC_JWKS_MAX_AGE_SECONDS", 300)
    if max_age > MAX_JWKS_MAX_AGE_SECONDS:
        raise ConfigError(
            f"CONSENT_OIDC_JWKS_MAX_AGE_SECONDS: at most {MAX_JWKS_MAX_AGE_SECONDS}, got {max_age}"
        )
    return OidcSettings(
        issuer=issuer,
        audience=audience,
        jwks_url=jwks_url,
        jwks_max_age_seconds=max_age,
        **claims,
    )


def is_key_source_url(value: str) -> bool:
    """Signing keys come over https; plain http only from this machine (a local test provider)."""
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    return (
        bool(parts.netloc)
        and not parts.query
        and not parts.fragment
        and (parts.scheme == "https" or (parts.scheme == "http" and loopback))
    )


def _key_source_url(name: str, value: str) -> None:
    if not is_key_source_url(value):
        raise ConfigError(f"{name}: an https:// address (http:// only on a loopback host)")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _topic(value: str) -> str:
    topic = value.strip()
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not topic or len(topic) > 200 or not set(topic) <= allowed:
        raise ConfigError("CONSENT_KAFKA_TOPIC: 1-200 characters of [a-zA-Z0-9._-]")
    return topic


def _vocabulary(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if name not in env:
        return default
    words = _split(env[name])
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if not words or any(not set(word) <= allowed or len(word) > 64 for word in words):
        raise ConfigError(f"{name}: a comma-separated list of lowercase words (a-z, 0-9, -)")
    return words


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")
    return value


def _mail_settings(env: Mapping[str, str], secret_keys: tuple[str, ...]) -> dict[str, Any]:
    """The SMTP server, sender and sealing keys; all unset when no mail is sent."""
    # Imported here, as the rate limits are: the mail package is not needed otherwise.
    from consent_service.mail.addresses import AddressError, mailbox
    from consent_service.mail.transport import SmtpUrlError, parse_smtp_url

    url = env.get("CONSENT_SMTP_URL", "").strip() or None
    if url is None:
        return {}
    try:
        parse_smtp_url(url)
    except SmtpUrlError as error:
        raise ConfigError(f"CONSENT_SMTP_URL: {error}") from None
    ca_file = env.get("CONSENT_SMTP_CA_FILE", "").strip() or None
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ConfigError(f"CONSENT_SMTP_CA_FILE: no such file {ca_file!r}")
    try:
        mail_from = str(mailbox(env.get("CONSENT_MAIL_FROM", "").strip(), display_name=True))
    except AddressError as error:
        raise ConfigError(f"CONSENT_MAIL_FROM: required with CONSENT_SMTP_URL; {error}") from None
    if not env.get("CONSENT_PUBLIC_URL", "").strip():
        raise ConfigError("CONSENT_PUBLIC_URL: required with CONSENT_SMTP_URL (links in mail)")
    mail_keys = _split(env.get("CONSENT_MAIL_KEYS", ""))
    if mail_keys and any(len(key) < 32 for key in mail_keys):
        raise ConfigError("CONSENT_MAIL_KEYS: every key must be at least 32 characters")
    if not mail_keys and not env.get("CONSENT_SECRET_KEYS", "").strip():
        # A random development key would differ between the API and the mailer.
        raise ConfigError(
            "CONSENT_SECRET_KEYS: required with CONSENT_SMTP_URL (or set CONSENT_MAIL_KEYS)"
        )
    return {
        "smtp_url": url,
        "smtp_ca_file": ca_file,
        "mail_from": mail_from,
        "mail_keys": mail_keys or secret_keys,
    }


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_client_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The relay's Kafka client and metrics settings (read by the relay only)."""
    protocol = env.get("CONSENT_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper()
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"CONSENT_KAFKA_SECURITY_PROTOCOL: one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    mechanism = env.get("CONSENT_KAFKA_SASL_MECHANISM", "").strip().upper() or None
    if mechanism is not None and mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(
            f"CONSENT_KAFKA_SASL_MECHANISM: one of {', '.join(KAFKA_SASL_MECHANISMS)}"
        )
    if (mechanism is None) == protocol.startswith("SASL_"):
        raise ConfigError(
            "CONSENT_KAFKA_SASL_MECHANISM: required with SASL_PLAINTEXT or SASL_SSL, "
            "and only with them"
        )
    username = env.get("CONSENT_KAFKA_SASL_USERNAME", "").strip() or None
    password = env.get("CONSENT_KAFKA_SASL_PASSWORD") or None
    if mechanism is not None and username is None:
        raise ConfigError("CONSENT_KAFKA_SASL_USERNAME: required with a SASL mechanism")
    if mechanism is not None and password is None:
        raise ConfigError("CONSENT_KAFKA_SASL_PASSWORD: required with a SASL mechanism")
    cafile = env.get("CONSENT_KAFKA_SSL_CAFILE", "").strip() or None
    if cafile is not None and not os.path.isfile(cafile):
        raise ConfigError(f"CONSENT_KAFKA_SSL_CAFILE: no such file {cafile!r}")
    port = _positive_int(env, "CONSENT_RELAY_METRICS_PORT", 9102)
    if port > 65535:
        raise ConfigError(f"CONSENT_RELAY_METRICS_PORT: must be a TCP port, got {port}")
    return {
        "kafka_partitions": _positive_int(env, "CONSENT_KAFKA_PARTITIONS", 12),
        "kafka_replication": _positive_int(env, "CONSENT_KAFKA_REPLICATION", 3),
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": username,
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": cafile,
        "relay_metrics_port": port,
    }


def load_settings(*uses: str) -> Settings:
    """Settings from the environment, or one clear line and exit status 2 (for commands).

    ``uses``: the key variables the command uses; each one left to its
    development value is warned about, once.
    """
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"consent-service: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    if uses:
        settings.warn_development_keys(*uses)
    return settings
