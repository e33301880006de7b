"""``consent-service mailer``: send the queued mail to patients (runs until SIGTERM).

The relay runs the same loop in a thread of its own when mail is configured
(``start_in_background``), so a deployment needs no extra process; a
standalone mailer beside it is safe, as both claim each message before
sending it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click

from consent_service.config import Settings, load_settings
from consent_service.db.session import Database
from consent_service.mail.mailer import Mailer, Outbound

log = logging.getLogger(__name__)


@click.command()
def mailer() -> None:
    """Send invitations and confirmations to patients, with retries (runs until SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    if not settings.mail_configured:
        click.echo("consent-service: CONSENT_SMTP_URL is unset: no mail to send.", err=True)
        sys.exit(2)
    database = Database(settings.database_url)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the message in flight, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        Mailer(database, Outbound.from_settings(settings)).run(stop)
    finally:
        database.dispose()


def start_in_background(
    settings: Settings, database: Database, stop: threading.Event
) -> threading.Thread | None:
    """The mailer loop in a thread of the calling process, when mail is configured."""
    if not settings.mail_configured:
        return None
    loop = Mailer(database, Outbound.from_settings(settings))
    thread = threading.Thread(target=loop.run, args=(stop,), name="mailer", daemon=True)
    thread.start()
    return thread
