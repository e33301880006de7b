"""Decisions/s and creates/s with 1, 2 and 3 API instances on one PostgreSQL.

    python benchmarks/scaleout.py --postgres-url URL [--duration 10] [--rounds 2]
    python benchmarks/scaleout.py --quick

Seeds (or reuses) its own 10k-consent PostgreSQL database
(``seed.py``'s data), starts N ``consent-service serve`` instances on it (each its
own gunicorn with ``--workers`` sync workers, on its own port), and drives
each instance with its own ``wrk`` at the same time (``load.py``: any
non-2xx answer fails the run). Rounds alternate the instance counts; the
table shows medians. The load generator, the instances and PostgreSQL share
this machine's cores, so the curve shows where *this machine* saturates, not
where PostgreSQL would on its own hardware: see docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

import load
import seed
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from consent_service.db.session import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak.processes import CLI, LOOPBACK, ApiInstance, wait_until

from tests.support.broker import free_port

SIZE = 10_000


def main() -> int:
    args = _arguments()
    workdir = Path(tempfile.mkdtemp(prefix="consent-scaleout-"))
    url = _own_database(args.postgres_url, args.database_name)
    seed.prepare(url, SIZE)
    token = seed.make_client(url)
    scripts = {
        mode: load.write_script(
            workdir / f"{mode}.lua", mode=mode, patients=seed.patient_count(SIZE), token=token
        )
        for mode in ("decide", "create")
    }
    engine = make_engine(url)
    figures: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for round_number in range(args.rounds):
        counts = args.instances if round_number % 2 == 0 else list(reversed(args.instances))
        for count in counts:
            with ExitStack() as stack:
                instances = [
                    _start(stack, url, workdir, number, args.workers) for number in range(count)
                ]
                for mode, route in (("decide", "/v1/decisions"), ("create", "/v1/consents")):
                    load_average = os.getloadavg()[0]
                    per_second, p99 = _drive(instances, route, scripts[mode], args)
                    figures.setdefault((count, mode), []).append((per_second, p99))
                    print(
                        f"round {round_number + 1}: {count} instance(s) {mode}: "
                        f"{per_second:.0f}/s p99 {p99:.1f} ms (load average {load_average:.1f})",
                        file=sys.stderr,
                    )
            # Instances stopped (gracefully: nothing in flight), the next step
            # starts at the seeded size again.
            seed.reset_writes(engine)
    engine.dispose()
    table = _table(figures, args)
    print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {f"{count}:{mode}": values for (count, mode), values in figures.items()}, indent=2
            )
        )
    return 0


def _own_database(base_url: str, name: str) -> str:
    """This benchmark's database (created when missing): never one another run is loading."""
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _start(stack: ExitStack, url: str, workdir: Path, number: int, workers: int) -> ApiInstance:
    port = free_port()
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": url,
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_SECRET_KEYS": "benchmark-signing-key-0123456789",
        "CONSENT_WEB_CONCURRENCY": str(workers),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    instance = ApiInstance(
        name=f"api-{number}",
        kind="api",
        command=[CLI, "serve", "--bind", f"{LOOPBACK}:{port}"],
        env=env,
        log=workdir / f"api-{number}.log",
        port=port,
        workers=workers,
    )
    instance.start()
    stack.callback(instance.stop)
    wait_until(instance.ready, 90, f"{instance.name} ready (see {instance.log})")
    return instance


def _drive(
    instances: list[ApiInstance], route: str, script: Path, args: argparse.Namespace
) -> tuple[float, float]:
    """Every instance loaded by its own wrk at once: the sum of rates, the worst p99."""
    connections = max(2, args.connections // len(instances))
    results: list[load.Result] = []
    errors: list[BaseException] = []

    def one(instance: ApiInstance) -> None:
        try:
            results.append(
                load.run(
                    instance.base_url + route,
                    script,
                    seconds=args.duration,
                    threads=1,
                    connections=connections,
                )
            )
        except BaseException as error:  # noqa: BLE001 - reported below, on the main thread
            errors.append(error)

    threads = [threading.Thread(target=one, args=(instance,)) for instance in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(result.per_second for result in results), max(result.p99_ms for result in results)


def _table(
    figures: dict[tuple[int, str], list[tuple[float, float]]], args: argparse.Namespace
) -> str:
    lines = [
        f"PostgreSQL, {SIZE:,} consents, {args.workers} sync workers per instance, "
        f"wrk {args.connections} connections in all, "
        f"{args.rounds} round(s) of {args.duration:.0f} s (medians)",
        "",
        "| instances | workers | decisions/s | decisions p99 ms | creates/s | creates p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for count in args.instances:
        decide, create = figures[(count, "decide")], figures[(count, "create")]
        cells = [str(count), str(count * args.workers)]
        for runs in (decide, create):
            cells.append(f"{statistics.median(rate for rate, _ in runs):,.0f}")
            cells.append(f"{statistics.median(p99 for _, p99 in runs):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CONSENT_BENCH_POSTGRES_URL", os.environ.get("CONSENT_TEST_POSTGRES_URL")
        ),
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="sync workers per instance")
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections, split over the instances"
    )
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--database-name",
        default=f"consent_scaleout_{os.environ.get('PYTEST_XDIST_WORKER', 'run')}",
        help="its own database on the server (seeded once, kept between runs)",
    )
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s (a smoke test)")
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error(
            "--postgres-url (or CONSENT_BENCH_POSTGRES_URL / CONSENT_TEST_POSTGRES_URL) is required"
        )
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    return args


if __name__ == "__main__":
    sys.exit(main())
