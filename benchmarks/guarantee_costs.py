"""What each guarantee costs a decision and a create, measured in one process.

Throughput under wrk says how far the service is from the bare baseline, not
where the difference goes. This script answers that: it drives the service
and the bare app (``bare_app.py``) through Flask's test client on the same
database, and runs the service again with one piece switched off at a time
(the request's audit entry, the JSON access line, the emergency accesses
read with a decision's consents, the version's audit entry, the outbox
event) or made to work harder (the API key verified on every request,
``CONSENT_API_KEY_CACHE_MS=0``). Each row is
the CPU time and the wall time per request, median of ``--rounds``; the
difference with the "service" row is what that piece costs. CPU time counts
every thread of the process (the audit batch writer's included); wall time
adds what the database waits for (SQLite's fsync at commit).

Switching a guarantee off is for measuring only: these variants exist in
this script, never in the service.

    python benchmarks/guarantee_costs.py                 # SQLite, 2,000 requests, 3 rounds
    python benchmarks/guarantee_costs.py --backends sqlite,postgresql --postgres-url URL
    python benchmarks/guarantee_costs.py --quick         # 50 requests, 1 round (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bare_app  # the sibling module, found through the first line above
import scratch

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.services import decisions
from consent_service.services.clients import SCOPES, create_client
from consent_service.timefmt import utcnow

ORGANIZATION = "org-costs"
PRACTITIONER = "rpps:10003456789"
SIGNING_KEY = "guarantee-costs-signing-key-0123456789"


def consent_body() -> dict[str, Any]:
    return {
        "patient_id": f"pat-{uuid.uuid4().hex[:12]}",
        "practitioner_id": PRACTITIONER,
        "categories": ["dental-chart", "radiographs"],
        "purposes": ["care-coordination"],
        "decision": "permit",
        "collection": {"method": "paper", "evidence_ref": "scan-1", "policy_version": "2026-01"},
    }


def question(patients: list[str]) -> dict[str, Any]:
    return {
        "patient_id": random.choice(patients),
        "practitioner_id": PRACTITIONER,
        "category": "radiographs",
        "purpose": "care-coordination",
    }


# Each variant: (name, patches applied while its app is built and measured, settings changes).
Variant = tuple[str, list[tuple[str, Any]], dict[str, Any]]
KEEP_RESPONSE: Callable[[Any], Any] = lambda response: response  # noqa: E731
COMMON: list[Variant] = [
    ("service", [], {}),
    (
        "without the request's audit entry",
        [("consent_service.audit.trail.record_request", KEEP_RESPONSE)],
        {},
    ),
    (
        "without the JSON access line",
        [("consent_service.http.security._access_log", KEEP_RESPONSE)],
        {},
    ),
    ("API key verified on every request", [], {"api_key_cache_ms": 0}),
]
DECISIONS: list[Variant] = [
    *COMMON,
    (
        "without the emergency accesses in the decision statement",
        [("consent_service.services.decisions._CURRENT", decisions._CURRENT.selects[0])],
        {},
    ),
]
CREATES: list[Variant] = [
    *COMMON,
    (
        "without the version's audit entry",
        [("consent_service.audit.audit_new_version", lambda *a, **k: None)],
        {},
    ),
    (
        "without the outbox event",
        [("consent_service.services.consents.add_event", lambda *a, **k: {})],
        {},
    ),
]


@contextlib.contextmanager
def patched(patches: list[tuple[str, Any]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for target, replacement in patches:
            stack.enter_context(mock.patch(target, replacement))
        yield


def per_request(send: Callable[[], int], count: int) -> tuple[float, float]:
    """CPU and wall milliseconds per request over ``count`` requests (after a warm-up)."""
    for _ in range(20):
        send()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        status = send()
        if status >= 300:
            raise SystemExit(f"a request answered {status}")
    return (
        (time.process_time() - cpu) / count * 1000,
        (time.perf_counter() - wall) / count * 1000,
    )


def measure_service(
    url: str, variant: Variant, path: str, count: int, patients: list[str]
) -> tuple[float, float]:
    name, patches, changes = variant
    database = Database(url)
    settings = Settings(database_url=url, secret_keys=(SIGNING_KEY,), rate_limits="off", **changes)
    try:
        with patched(patches):
            client = create_app(settings, database=database).test_client()
            with database.transaction() as session:
                _, key = create_client(
                    session, organization=ORGANIZATION, scopes=list(SCOPES), name=name, now=utcnow()
                )
            auth = {"Authorization": f"Bearer {key}"}
            if path == "decisions":
                return per_request(
                    lambda: (
                        client.post(
                            "/v1/decisions", json=question(patients), headers=auth
                        ).status_code
                    ),
                    count,
                )
            return per_request(
                lambda: client.post("/v1/consents", json=consent_body(), headers=auth).status_code,
                count,
            )
    finally:
        database.dispose()


def measure_bare(url: str, path: str, count: int, patients: list[str]) -> tuple[float, float]:
    os.environ[bare_app.DATABASE_URL_ENV] = url
    os.environ[bare_app.ORGANIZATION_ENV] = ORGANIZATION
    client = bare_app.create_app().test_client()
    if path == "decisions":
        return per_request(
            lambda: client.post("/select", json=question(patients)).status_code, count
        )
    return per_request(lambda: client.post("/insert", json=consent_body()).status_code, count)


def seed(url: str, count: int) -> list[str]:
    """``count`` consents through the service, one per patient; returns the patients."""
    patients: list[str] = []
    database = Database(url)
    settings = Settings(database_url=url, secret_keys=(SIGNING_KEY,), rate_limits="off")
    client = create_app(settings, database=database).test_client()
    with database.transaction() as session:
        _, key = create_client(
            session, organization=ORGANIZATION, scopes=list(SCOPES), name="seed", now=utcnow()
        )
    for _ in range(count):
        body = consent_body()
        answer = client.post("/v1/consents", json=body, headers={"Authorization": f"Bearer {key}"})
        if answer.status_code != 201:
            raise SystemExit(f"seeding answered {answer.status_code}")
        patients.append(body["patient_id"])
    database.dispose()
    return patients


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> list[str]:
    lines = []
    with scratch.database_url(backend, workdir, args.postgres_url, "guarantee_costs") as url:
        patients = seed(url, args.consents)
        for path, variants in (("decisions", DECISIONS), ("creates", CREATES)):
            figures: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                figures.setdefault("bare app", []).append(
                    measure_bare(url, path, args.requests, patients)
                )
                for variant in variants:
                    figures.setdefault(variant[0], []).append(
                        measure_service(url, variant, path, args.requests, patients)
                    )
            service_cpu = statistics.median(cpu for cpu, _ in figures["service"])
            for name, runs in figures.items():
                cpu = statistics.median(c for c, _ in runs)
                wall = statistics.median(w for _, w in runs)
                delta = cpu - service_cpu
                lines.append(
                    f"| {backend} | {path} | {name} | {cpu:.2f} | {wall:.2f} | {delta:+.2f} |"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=lambda v: v.split(","), default=["sqlite"])
    parser.add_argument("--postgres-url", default=scratch.default_postgres_url())
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consents", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="50 requests, 1 round, 50 consents")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.consents = 50, 1, 50
    lines = [
        "| database | path | variant | CPU ms / request | wall ms / request | CPU vs service |",
        "|---|---|---|---|---|---|",
    ]
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        # The service's JSON lines (one per request) are written, as in production, but to
        # /dev/null: the table is what this prints.
        stack.enter_context(contextlib.redirect_stderr(stack.enter_context(open(os.devnull, "w"))))
        for backend in args.backends:
            lines += run_backend(backend, args, workdir)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
