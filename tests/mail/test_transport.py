"""Sending through a real SMTP server: plain, STARTTLS with AUTH, implicit TLS, and failures."""

from __future__ import annotations

import socket
import threading
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest

from consent_service.mail.transport import (
    PermanentFailure,
    SmtpUrlError,
    TemporaryFailure,
    parse_smtp_url,
    send,
)
from tests.mail.smtp_server import PASSWORD, USER, smtp_server
from tests.support.broker import free_port


def _message(to: str = "patient@example.org") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "cabinet@example.org"
    message["To"] = to
    message["Subject"] = "test"
    message.set_content("hello")
    return message


def test_plain_smtp_delivers() -> None:
    with smtp_server() as (controller, mailbox):
        send(parse_smtp_url(f"smtp://127.0.0.1:{controller.port}"), _message())
        (received,) = mailbox.wait_for(1)
    assert received["To"] == "patient@example.org"


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_tls_with_auth_delivers_and_checks_the_certificate(mode: str, tmp_path: Path) -> None:
    scheme = "smtp+starttls" if mode == "starttls" else "smtps"
    with smtp_server(mode, tmp_path) as (controller, mailbox):
        url = f"{scheme}://{quote(USER)}:{quote(PASSWORD, safe='')}@127.0.0.1:{controller.port}"
        send(parse_smtp_url(url, ca_file=str(tmp_path / "smtp.crt")), _message())
        assert len(mailbox.wait_for(1)) == 1
        # Without the private CA the certificate is not trusted: nothing is sent.
        with pytest.raises(TemporaryFailure):
            send(parse_smtp_url(url), _message())
        wrong = f"{scheme}://{USER}:wrong@127.0.0.1:{controller.port}"
        # Refused credentials: nothing is sent (aiosmtpd then stops answering,
        # so the client ends on its timeout: temporary for us, retried later).
        with pytest.raises((PermanentFailure, TemporaryFailure)):
            send(parse_smtp_url(wrong, ca_file=str(tmp_path / "smtp.crt")), _message(), timeout=3)
    assert len(mailbox.messages) == 1


def test_starttls_is_never_silently_skipped(tmp_path: Path) -> None:
    with smtp_server() as (controller, mailbox):
        url = parse_smtp_url(f"smtp+starttls://127.0.0.1:{controller.port}")
        with pytest.raises(PermanentFailure):
            send(url, _message())
    assert mailbox.messages == []


def test_a_refusing_server_is_temporary_or_permanent_by_its_code() -> None:
    with smtp_server() as (controller, mailbox):
        server = parse_smtp_url(f"smtp://127.0.0.1:{controller.port}")
        mailbox.refuse_with = "451 4.3.0 try again later"
        with pytest.raises(TemporaryFailure):
            send(server, _message())
        mailbox.refuse_with = "550 5.1.1 no such user"
        with pytest.raises(PermanentFailure):
            send(server, _message())


def test_a_stopped_or_hanging_server_is_a_temporary_failure() -> None:
    with pytest.raises(TemporaryFailure):
        send(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}"), _message())
    # A server that accepts the connection and never says a word.
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        with pytest.raises(TemporaryFailure):
            send(
                parse_smtp_url(f"smtp://127.0.0.1:{listener.getsockname()[1]}"),
                _message(),
                timeout=0.5,
            )
    finally:
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://host",
        "smtp://",
        "smtp://host/path",
        "smtp://user@host",
        "smtp://h:99999",
        "smtp://host?x=1",
        "smtps://:pw@host",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(SmtpUrlError):
        parse_smtp_url(url)


def test_the_password_never_shows_in_the_server_repr() -> None:
    server = parse_smtp_url("smtps://u:very-secret@mail.example:465")
    assert "very-secret" not in repr(server) and server.password == "very-secret"
