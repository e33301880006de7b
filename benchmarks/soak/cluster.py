"""The soak's processes, started together: database, API instances, relays, subscribers."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from soak.processes import (
    CLI,
    EVENTS_CLI,
    LOOPBACK,
    ApiInstance,
    RelayProcess,
    SubscriberProcess,
    create_database,
    drop_database,
    prepare_service,
    rss_kib_of,
    through_port,
    wait_until,
)
from tests.support.broker import free_port

RELAYS = 3
SUBSCRIBERS = 2
START_TIMEOUT_S = 90


@dataclass
class Processes:
    base_url: str
    database_name: str
    database_url: str
    direct_env: dict[str, str]
    api_key: str
    apis: list[ApiInstance]
    relays: list[RelayProcess]
    subscribers: list[SubscriberProcess]

    @staticmethod
    def rss_of(pid: int) -> int:
        return rss_kib_of(pid)

    def stop_all(self) -> None:
        for managed in [*self.apis, *self.relays, *self.subscribers]:
            managed.stop(timeout=20)

    def drop_database(self) -> None:
        drop_database(self.base_url, self.database_name)


def service_env(database_url: str, bootstrap: str, topic: str, partitions: int) -> dict[str, str]:
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONSENT_KAFKA_TOPIC": topic,
        "CONSENT_KAFKA_PARTITIONS": str(partitions),
        "CONSENT_KAFKA_REPLICATION": "1",
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_SECRET_KEYS": "soak-signing-key-0123456789abcdef",
        "CONSENT_API_KEY_PEPPER": "soak-pepper-0123456789abcdef0123456789",
        "CONSENT_AUDIT_KEYS": "soak-audit-key-0123456789abcdef0123456789",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_processes(
    args: argparse.Namespace, workdir: Path, *, bootstrap: str, topic: str, database_port: int
) -> Processes:
    """Everything up and ready: instances answer ``/readyz``, exactly one relay is active."""
    database_url = create_database(args.postgres_url, args.database_name)
    direct_env = service_env(database_url, bootstrap, topic, args.partitions)
    api_key = prepare_service(direct_env)
    # API instances reach PostgreSQL through the proxy the database-cut fault breaks.
    api_env = {
        **direct_env,
        "CONSENT_DATABASE_URL": through_port(database_url, database_port),
        "CONSENT_WEB_CONCURRENCY": str(args.workers),
    }
    apis = []
    for number in range(args.instances):
        port = free_port()
        apis.append(
            ApiInstance(
                name=f"api-{number}",
                kind="api",
                command=[CLI, "serve", "--bind", f"{LOOPBACK}:{port}"],
                env=api_env,
                log=workdir / f"api-{number}.log",
                port=port,
                workers=args.workers,
            )
        )
    relays = []
    for number in range(RELAYS):
        metrics_port = free_port()
        relays.append(
            RelayProcess(
                name=f"relay-{number}",
                kind="relay",
                command=[
                    CLI,
                    "relay",
                    "--metrics-host",
                    LOOPBACK,
                    "--metrics-port",
                    str(metrics_port),
                ],
                env=direct_env,
                log=workdir / f"relay-{number}.log",
                metrics_port=metrics_port,
            )
        )
    subscribers = []
    for number in range(SUBSCRIBERS):
        store = workdir / f"subscriber-{number}.db"
        subscribers.append(
            SubscriberProcess(
                name=f"subscriber-{number}",
                kind="subscriber",
                command=[
                    EVENTS_CLI,
                    "listen",
                    "--bootstrap-servers",
                    bootstrap,
                    "--group",
                    f"soak-{number}",
                    "--store",
                    str(store),
                    "--topic",
                    topic,
                    "--assign",
                ],
                env=dict(os.environ),
                log=workdir / f"subscriber-{number}.log",
                store=store,
            )
        )
    processes = Processes(
        args.postgres_url,
        args.database_name,
        database_url,
        direct_env,
        api_key,
        apis,
        relays,
        subscribers,
    )
    for managed in [*apis, *relays, *subscribers]:
        managed.start()
    try:
        for instance in apis:
            wait_until(
                instance.ready, START_TIMEOUT_S, f"{instance.name} ready (see {instance.log})"
            )
        wait_until(
            lambda: sum(relay.active() for relay in relays) == 1,
            START_TIMEOUT_S,
            "exactly one active relay",
        )
    except TimeoutError:
        processes.stop_all()
        raise
    return processes
