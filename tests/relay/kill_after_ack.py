"""A relay process that dies by SIGKILL once Kafka acknowledged a batch, before marking it.

Run by the fault tests: ``python -m tests.relay.kill_after_ack DATABASE_URL BOOTSTRAP TOPIC``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.outbox.lease import lease_for
from consent_service.outbox.publisher import KafkaPublisher
from consent_service.outbox.relay import Relay, RelayOptions


def main(database_url: str, bootstrap: str, topic: str) -> None:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=(bootstrap,),
        kafka_topic=topic,
        kafka_partitions=3,
        kafka_replication=1,
    )
    database = Database(database_url)
    relay = Relay(
        database,
        KafkaPublisher(settings),
        lease_for(database),
        options=RelayOptions(topic=topic, batch_size=20),
        on_acknowledged=lambda rows: os.kill(os.getpid(), signal.SIGKILL),
    )
    relay.run(threading.Event())


if __name__ == "__main__":
    main(*sys.argv[1:])
