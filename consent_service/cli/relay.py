"""``consent-service relay`` and ``consent-service expire``.

The relay's modules (and kafka-python) are imported inside the commands, so
that loading the CLI for ``serve`` opens no broker client before gunicorn
forks.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from consent_service.cli.mailer import start_in_background
from consent_service.config import load_settings
from consent_service.db.session import Database

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--metrics-host",
    default="0.0.0.0",  # noqa: S104 - the pod's metrics port is scraped from outside
    show_default=True,
    help="Address of the /metrics and /healthz endpoint.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Port of /metrics and /healthz (default: CONSENT_RELAY_METRICS_PORT, 9102).",
)
def relay(metrics_host: str, metrics_port: int | None) -> None:
    """Publish the outbox to Kafka, expire consents, send mail if configured (until SIGTERM)."""
    from consent_service.outbox.lease import lease_for
    from consent_service.outbox.publisher import KafkaPublisher
    from consent_service.outbox.relay import Relay, RelayOptions
    from consent_service.outbox.relay_metrics import Heartbeat, serve_metrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    database = Database(settings.database_url)
    if not settings.kafka_bootstrap_servers:
        log.warning(
            "CONSENT_KAFKA_BOOTSTRAP_SERVERS is unset: ordering the outbox for "
            "GET /v1/events and running expiry, publishing nothing"
        )
    publisher = KafkaPublisher(settings) if settings.kafka_bootstrap_servers else None
    heartbeat = Heartbeat()
    server = serve_metrics(
        database,
        heartbeat,
        host=metrics_host,
        port=settings.relay_metrics_port if metrics_port is None else metrics_port,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the round in flight, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = RelayOptions(topic=settings.kafka_topic, topic_mode=settings.kafka_topic_mode)
    mail_thread = start_in_background(settings, database, stop)
    try:
        Relay(database, publisher, lease_for(database), options=options, heartbeat=heartbeat).run(
            stop
        )
    finally:
        stop.set()
        if mail_thread is not None:
            mail_thread.join()
        server.shutdown()
        database.dispose()


@click.command()
def expire() -> None:
    """Expire consents whose valid_until has passed (for a CronJob), then exit."""
    from consent_service.services.expiry import expire_due

    database = Database(load_settings().database_url)
    try:
        count = expire_due(database)
    finally:
        database.dispose()
    click.echo(f"expired {count} consents")
