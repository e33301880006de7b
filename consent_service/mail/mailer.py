"""The mailer: sends what the queue holds, retries with backoff, erases addresses.

One round (``Mailer.run_once``):

1. erase the addresses nothing more will be sent to: those of requests that
   closed (answered, expired) while their invitation waited or after it was
   sent; a queued invitation of a closed request is ``failed`` unsent;
2. claim each due message with a conditional UPDATE that also counts the
   attempt and hides the row for ``claim_seconds``, so two mailers (the
   relay's and a standalone one) never send the same row at once, and a
   mailer that dies mid-send leaves the row to be retried, not lost;
3. open the address, compose and send, outside any transaction, so a slow
   SMTP server holds no lock;
4. record the outcome: ``sent``; or, after a temporary failure (server
   stopped, refusing with 4xx, hanging past the timeout), due again after a
   growing delay, ``failed`` after ``max_attempts``; ``failed`` at once on a
   permanent refusal. A sent confirmation or a failed message loses its
   address at the same time.

Only the class of an error is kept or logged: an SMTP server's reply may
quote the address.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from consent_service.config import Settings
from consent_service.db.mail_models import MailMessage
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.mail import compose
from consent_service.mail.queue import INVITATION, REQUEST_CLOSED
from consent_service.mail.sealing import Sealer, SealError
from consent_service.mail.transport import (
    PermanentFailure,
    SmtpServer,
    TemporaryFailure,
    parse_smtp_url,
    send,
)
from consent_service.services import links
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MailerOptions:
    """Tuning of the loop; the defaults suit production."""

    max_attempts: int = 5
    # Delay after the n-th failed attempt: first * factor ** (n - 1): 1, 4, 16, 64 minutes.
    backoff_first: float = 60.0
    backoff_factor: float = 4.0
    # Longer than an SMTP exchange may take (the transport's timeout).
    claim_seconds: float = 120.0
    smtp_timeout: float = 20.0
    batch_size: int = 20
    idle_poll: float = 2.0
    database_backoff: float = 5.0


@dataclass(frozen=True)
class Outbound:
    """What the mailer needs to know to send: where, as whom, which links."""

    server: SmtpServer
    mail_from: str
    public_url: str
    link_keys: tuple[str, ...]
    sealer: Sealer

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbound:
        assert settings.smtp_url and settings.mail_from and settings.public_url
        return cls(
            server=parse_smtp_url(settings.smtp_url, ca_file=settings.smtp_ca_file),
            mail_from=settings.mail_from,
            public_url=settings.public_url,
            link_keys=settings.secret_keys,
            sealer=Sealer(settings.mail_keys),
        )


class Mailer:
    """Sends the queued messages of ``database`` through ``outbound``."""

    def __init__(
        self,
        database: Database,
        outbound: Outbound,
        *,
        options: MailerOptions | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.outbound = outbound
        self.options = options or MailerOptions()
        self.clock = clock

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set; a database outage pauses, never ends, the loop."""
        log.info("mailer started: sending through %r", self.outbound.server)
        while not stop.is_set():
            try:
                handled = self.run_once()
            except SQLAlchemyError as error:
                log.warning("mailer: database unavailable (%s)", type(error).__name__)
                stop.wait(self.options.database_backoff)
                continue
            except Exception:
                # Never end the loop (in the relay, mail would stop unseen); the
                # rows stay queued and the next round tries again.
                log.exception("mailer: round failed")
                stop.wait(self.options.database_backoff)
                continue
            if not handled:
                stop.wait(self.options.idle_poll)

    def run_once(self) -> int:
        """One round; the number of messages tried."""
        now = self.clock()
        self._erase_closed(now)
        tried = 0
        for message_id in self._due(now):
            if self._claim(message_id):
                self._deliver(message_id)
                tried += 1
        return tried

    # Steps ----------------------------------------------------------------

    def _erase_closed(self, now: datetime) -> None:
        closed = select(ConsentRequest.id).where(
            or_(ConsentRequest.status != "pending", ConsentRequest.expires_at <= now)
        )
        invitations = MailMessage.kind == INVITATION, MailMessage.request_id.in_(closed)
        with self.database.transaction() as session:
            session.execute(
                update(MailMessage)
                .where(*invitations, MailMessage.status == "queued")
                .values(
                    status="failed",
                    sealed_address=None,
                    next_attempt_at=None,
                    last_error=REQUEST_CLOSED,
                )
            )
            session.execute(
                update(MailMessage)
                .where(*invitations, MailMessage.sealed_address.is_not(None))
                .values(sealed_address=None)
            )

    def _due(self, now: datetime) -> list[int]:
        with self.database.reading() as session:
            return list(
                session.scalars(
                    select(MailMessage.id)
                    .where(MailMessage.status == "queued", MailMessage.next_attempt_at <= now)
                    .order_by(MailMessage.next_attempt_at)
                    .limit(self.options.batch_size)
                )
            )

    def _claim(self, message_id: int) -> bool:
        now = self.clock()
        with self.database.transaction() as session:
            claimed = session.execute(
                update(MailMessage)
                .where(
                    MailMessage.id == message_id,
                    MailMessage.status == "queued",
                    MailMessage.next_attempt_at <= now,
                )
                .values(
                    attempts=MailMessage.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=self.options.claim_seconds),
                )
            )
            return int(claimed.rowcount) == 1  # type: ignore[attr-defined]

    def _deliver(self, message_id: int) -> None:
        with self.database.reading() as session:
            message = session.get(MailMessage, message_id)
            assert message is not None
            consent_request = session.get(ConsentRequest, message.request_id)
            assert consent_request is not None
            attempts, kind = message.attempts, message.kind
            try:
                if message.sealed_address is None:
                    raise SealError("the address was erased")
                address = self.outbound.sealer.open(
                    message.sealed_address, bound_to=consent_request.id
                )
            except SealError:
                # Sealed under a key no longer configured: it can never be sent.
                self._record(message_id, failure="SealError", final=True)
                return
            try:
                email = self._compose(kind, consent_request, address)
            except ValueError:
                # A stored name the email headers refuse (the API refuses it since).
                self._record(message_id, failure="ComposeError", final=True)
                return
        try:
            send(self.outbound.server, email, timeout=self.options.smtp_timeout)
        except TemporaryFailure:
            final = attempts >= self.options.max_attempts
            self._record(message_id, failure="TemporaryFailure", final=final, attempts=attempts)
        except PermanentFailure:
            self._record(message_id, failure="PermanentFailure", final=True)
        else:
            # A confirmation is the last message: its address goes with it.
            self._record(message_id, erase=kind != INVITATION)
            log.info("mail %s sent (attempt %d)", message_id, attempts)

    def _compose(self, kind: str, consent_request: ConsentRequest, address: str) -> EmailMessage:
        head = compose.Letterhead(
            mail_from=self.outbound.mail_from,
            practice=consent_request.organization_name or consent_request.organization,
            practitioner=consent_request.practitioner_name,
            profession=consent_request.practitioner_profession,
        )
        language = consent_request.language
        if kind == INVITATION:
            form_url = self._link(links.ANSWER, consent_request)
            return compose.invitation(head, address, language, form_url, consent_request.expires_at)
        version = consent_request.text_version
        return compose.confirmation(
            head,
            address,
            language,
            granted=consent_request.status == "granted",
            categories=consent_request.categories,
            purposes=consent_request.purposes,
            text_version=f"{version}/{consent_request.text_language}" if version else None,
            manage_url=self._link(links.MANAGE, consent_request),
            manage_expires_at=self.clock() + links.MAX_AGE[links.MANAGE],
        )

    def _link(self, purpose: str, consent_request: ConsentRequest) -> str:
        outbound = self.outbound
        return links.public_link(
            outbound.public_url,
            outbound.link_keys,
            purpose,
            consent_request.id,
            consent_request.language,
        )

    def _record(
        self,
        message_id: int,
        *,
        failure: str | None = None,
        final: bool = False,
        attempts: int = 0,
        erase: bool = False,
    ) -> None:
        now = self.clock()
        values: dict[str, object]
        if failure is None:
            values = {"status": "sent", "sent_at": now, "next_attempt_at": None, "last_error": None}
            if erase:
                values["sealed_address"] = None
        elif final:
            values = {"status": "failed", "next_attempt_at": None, "sealed_address": None}
            values["last_error"] = failure
        else:
            delay = self.options.backoff_first * self.options.backoff_factor ** (attempts - 1)
            values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": failure}
        with self.database.transaction() as session:
            session.execute(update(MailMessage).where(MailMessage.id == message_id).values(values))
        if failure is not None:
            log.warning("mail %s: %s%s", message_id, failure, " (given up)" if final else "")
