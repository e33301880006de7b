"""Sending one message to the configured SMTP server.

``CONSENT_SMTP_URL`` names the server and how to reach it:
``smtp://host:25`` (plain, for a relay on the local network),
``smtp+starttls://user:password@host:587`` (upgraded to TLS before anything
else is said; refused if the server does not offer it) or
``smtps://user:password@host:465`` (TLS from the first byte). Credentials
are percent-decoded. Certificates are verified against the system's
authorities, or ``CONSENT_SMTP_CA_FILE`` when the server's CA is private.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
TIMEOUT_S = 20.0


class SmtpUrlError(ValueError):
    """CONSENT_SMTP_URL is malformed; the message says how."""


class TemporaryFailure(Exception):
    """The server could not take the message now: try again later."""


class PermanentFailure(Exception):
    """The server refused the message for good (e.g. 5xx on the recipient)."""


@dataclass(frozen=True)
class SmtpServer:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:  # never the password, in logs or tracebacks
        return f"SmtpServer({self.scheme}://{self.host}:{self.port})"


def parse_smtp_url(url: str, ca_file: str | None = None) -> SmtpServer:
    """The server named by ``url``, or SmtpUrlError saying what is wrong."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise SmtpUrlError("not a URL such as smtp+starttls://user:password@host:587") from None
    if parts.scheme not in SCHEMES:
        raise SmtpUrlError(f"the scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SmtpUrlError("a host (and optional port), with no path or query")
    if (parts.username is None) != (parts.password is None) or parts.username == "":
        raise SmtpUrlError("give both user and password, or neither")
    return SmtpServer(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or SCHEMES[parts.scheme],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca_file=ca_file,
    )


def send(server: SmtpServer, message: EmailMessage, timeout: float = TIMEOUT_S) -> None:
    """Hand ``message`` to ``server``; TemporaryFailure or PermanentFailure if not taken."""
    try:
        with _connect(server, timeout) as connection:
            if server.username is not None and server.password is not None:
                connection.login(server.username, server.password)
            refused = connection.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        raise _failure(min(codes), "recipient refused") from None
    except smtplib.SMTPResponseException as error:
        raise _failure(error.smtp_code, "server answered an error") from None
    except smtplib.SMTPNotSupportedError:
        raise PermanentFailure("the server lacks what the URL asks (STARTTLS, AUTH)") from None
    except (OSError, smtplib.SMTPException) as error:
        # Connection refused, reset, timed out, TLS failure: the server may be back later.
        raise TemporaryFailure(type(error).__name__) from None
    if refused:
        raise PermanentFailure("recipient refused")


def _connect(server: SmtpServer, timeout: float) -> smtplib.SMTP:
    context = ssl.create_default_context(cafile=server.ca_file)
    if server.scheme == "smtps":
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    connection = smtplib.SMTP(server.host, server.port, timeout=timeout)
    if server.scheme == "smtp+starttls":
        try:
            connection.starttls(context=context)
        except BaseException:
            connection.close()
            raise
    return connection


def _failure(code: int, what: str) -> Exception:
    text = f"{what} ({code})"
    return TemporaryFailure(text) if code < 500 else PermanentFailure(text)
