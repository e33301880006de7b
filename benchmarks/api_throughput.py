"""Decisions and creates per second against a bare Flask baseline, one table.

For each database (SQLite, PostgreSQL) and each size (10 thousand and
1 million consents): seed a database (``seed.py``), start the service and
the bare app (``bare_app.py``) on it under the same gunicorn settings (the
service's own ``gunicorn_conf``: its EdgeWorker, 2 per core, unless
``--worker-class`` names another for both), then drive each
with ``wrk`` (``load.py``) in interleaved rounds: this machine is noisy, so
only figures measured side by side are compared, and the table shows
medians over rounds. Targets (issue 2): decisions >= 0.8 of the bare
SELECT, creates >= 0.6 of the bare insert, the 1M figure within 1.2 of the
10k one.

    python benchmarks/api_throughput.py                    # the real run (~25 min)
    python benchmarks/api_throughput.py --quick            # smoke: small, short
    python benchmarks/api_throughput.py --backends sqlite --rounds 3 --duration 5

PostgreSQL runs when ``--postgres-url`` (or ``CONSENT_BENCH_POSTGRES_URL``,
else ``CONSENT_TEST_POSTGRES_URL``) names a server; the benchmark creates
its own databases there (``consent_bench_<size>_<schema hash>``) and keeps
them seeded between runs. Writes a results file (``results.py``) with every
ratio; ``report.py`` turns the newest full run into the READMEs' tables.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import load
import results
import seed
from sqlalchemy import Engine

from consent_service import gunicorn_conf
from consent_service.db.session import make_engine
from consent_service.gunicorn_conf import available_cpus

HERE = Path(__file__).resolve().parent
TARGETS = {"decisions": 0.8, "creates": 0.6}
SIZE_TOLERANCE = 1.2
PATHS = {
    "decisions": ("/v1/decisions", "/select", "decide"),
    "creates": ("/v1/consents", "/insert", "create"),
}


@dataclass(frozen=True)
class Server:
    name: str
    base_url: str


@dataclass(frozen=True)
class Target:
    """One database at one size, with both servers started on it."""

    backend: str
    size: int
    engine: Engine
    service: Server
    bare: Server
    scripts: dict[str, Path]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    measured: dict[tuple[str, int, str, str], list[load.Result]] = defaultdict(list)
    print(
        f"{available_cpus()} CPUs, gunicorn {args.worker_class} x{args.workers}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} interleaved rounds (medians)",
        flush=True,
    )
    for backend in args.backends:
        with _targets(args, backend) as targets:
            _measure(args, targets, measured)
    print()
    print(render_table(measured, args.backends, args.sizes))
    path = results_run(measured, args).save(args.results_dir)
    print(f"\nresults file: {path}")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 s runs, 1 round")
    parser.add_argument("--sizes", type=lambda v: [int(s) for s in v.split(",")])
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    parser.add_argument("--backends", type=lambda v: v.split(","))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CONSENT_BENCH_POSTGRES_URL", os.environ.get("CONSENT_TEST_POSTGRES_URL")
        ),
        help="a PostgreSQL server URL (any database; the benchmark creates its own)",
    )
    parser.add_argument("--workers", type=int, default=2 * available_cpus())
    parser.add_argument(
        "--worker-class",
        default=gunicorn_conf.worker_class,
        help="gunicorn worker class for the service and the bare app alike (e.g. sync)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "consent-bench"
    )
    results.add_arguments(parser, quick=False)
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([500, 2_000] if quick else [10_000, 1_000_000])
    args.rounds = args.rounds or (1 if quick else 5)
    args.duration = args.duration or (1.0 if quick else 10.0)
    args.warmup = 1.0 if quick else 3.0
    if args.backends is None:
        args.backends = ["sqlite", "postgresql"] if args.postgres_url else ["sqlite"]
    if "postgresql" in args.backends and not args.postgres_url:
        parser.error("postgresql needs --postgres-url or CONSENT_BENCH_POSTGRES_URL")
    return args


@contextmanager
def _targets(args: argparse.Namespace, backend: str) -> Iterator[list[Target]]:
    """Every size of one backend seeded, both servers up on each."""
    print(f"{backend}: preparing databases", flush=True)
    with ExitStack() as stack:
        targets = []
        for size in args.sizes:
            if backend == "sqlite":
                url = seed.sqlite_database_url(args.workdir, size)
            else:
                url = seed.postgres_database_url(args.postgres_url, size)
            seed.prepare(url, size)
            engine = make_engine(url)
            stack.callback(engine.dispose)
            token = seed.make_client(url)
            patients = seed.patient_count(size)
            scripts = {
                mode: load.write_script(
                    args.workdir / f"{backend}-{size}-{mode}.lua",
                    mode=mode,
                    patients=patients,
                    token=token,
                )
                for mode in ("decide", "create")
            }
            service = stack.enter_context(
                _gunicorn(args, f"service-{backend}-{size}", url, "consent_service:create_app()")
            )
            bare = stack.enter_context(
                _gunicorn(args, f"bare-{backend}-{size}", url, "bare_app:create_app()")
            )
            target = Target(backend, size, engine, service, bare, scripts)
            _preflight(target, token)
            targets.append(target)
        yield targets


@contextmanager
def _gunicorn(args: argparse.Namespace, name: str, url: str, app: str) -> Iterator[Server]:
    """gunicorn with the service's own config, whichever app it serves."""
    port = _free_port()
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": url,
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_SECRET_KEYS": "benchmark-signing-key-0123456789",
        "BENCH_DATABASE_URL": url,
        "BENCH_ORGANIZATION": seed.ORGANIZATION,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:consent_service.gunicorn_conf",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(HERE),
        app,
    ]
    log = (args.workdir / f"{name}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, args.workdir / f"{name}.log")
        yield Server(name, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not listen on {port}; see {log}")


def _preflight(target: Target, token: str) -> None:
    """One request of each kind must succeed with the expected body, or nothing is measured."""
    question = {
        "patient_id": seed.patient_id(0),
        "practitioner_id": seed.PRACTITIONERS[0],
        "category": "identity",
        "purpose": "referral",
    }
    new = {
        "patient_id": f"{seed.WRITE_PREFIX}preflight",
        "practitioner_id": seed.PRACTITIONERS[0],
        "categories": ["identity"],
        "purposes": ["referral"],
        "decision": "permit",
        "collection": {"method": "partner-api"},
    }
    checks = [
        (target.service.base_url + "/v1/decisions", question, 200, "decision"),
        (target.bare.base_url + "/select", question, 200, "rows"),
        (target.service.base_url + "/v1/consents", new, 201, "version"),
        (target.bare.base_url + "/insert", new, 201, "id"),
    ]
    for url, body, status, key in checks:
        request = urllib.request.Request(  # noqa: S310 - our own loopback servers
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                answer, got = json.load(response), response.status
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{url}: {error.code} {error.read()[:500]!r}") from None
        if got != status or key not in answer:
            raise RuntimeError(f"{url}: expected {status} with {key!r}, got {got} {answer}")
    seed.reset_writes(target.engine)


def _measure(
    args: argparse.Namespace,
    targets: list[Target],
    measured: dict[tuple[str, int, str, str], list[load.Result]],
) -> None:
    """Warm every server up, then run the rounds, alternating which goes first."""

    def one(target: Target, path: str, which: str, seconds: float) -> load.Result:
        service_path, bare_path, mode = PATHS[path]
        server = target.service if which == "service" else target.bare
        route = service_path if which == "service" else bare_path
        result = load.run(
            server.base_url + route,
            target.scripts[mode],
            seconds=seconds,
            threads=args.threads,
            connections=args.connections,
        )
        if path == "creates":
            seed.reset_writes(target.engine)
        return result

    for target in targets:
        for path in PATHS:
            for which in ("service", "bare"):
                one(target, path, which, args.warmup)
    for round_number in range(args.rounds):
        # Alternate who goes first, and which size: a run right after a big
        # write round pays for the disk catching up.
        order = ("service", "bare") if round_number % 2 == 0 else ("bare", "service")
        sizes = targets if round_number % 2 == 0 else targets[::-1]
        for path in PATHS:
            for target in sizes:
                for which in order:
                    result = one(target, path, which, args.duration)
                    measured[(target.backend, target.size, path, which)].append(result)
                    print(
                        f"  round {round_number + 1} {target.backend} {_label(target.size)} "
                        f"{path} {which}: {result.per_second:,.0f}/s "
                        f"p50 {result.p50_ms:.1f} p99 {result.p99_ms:.1f} ms",
                        flush=True,
                    )


@dataclass(frozen=True)
class Summary:
    """One database, size and path: medians over rounds, and ratios of paired rounds."""

    backend: str
    size: int
    path: str
    service: list[load.Result]
    bare: list[load.Result]
    ratio: float
    # Larger size over smaller, for the larger size only.
    scaling: float | None


def summarize(
    measured: dict[tuple[str, int, str, str], list[load.Result]],
    backends: list[str],
    sizes: list[int],
) -> list[Summary]:
    small, large = min(sizes), max(sizes)
    summaries = []
    for backend in backends:
        for size in sorted(sizes):
            for path in TARGETS:
                service = measured[(backend, size, path, "service")]
                bare = measured[(backend, size, path, "bare")]
                ratio = statistics.median(
                    s.per_second / b.per_second for s, b in zip(service, bare, strict=True)
                )
                scaling = None
                if size == large and large != small:
                    baseline = measured[(backend, small, path, "service")]
                    scaling = statistics.median(
                        big.per_second / little.per_second
                        for big, little in zip(service, baseline, strict=True)
                    )
                summaries.append(Summary(backend, size, path, service, bare, ratio, scaling))
    return summaries


def render_table(
    measured: dict[tuple[str, int, str, str], list[load.Result]],
    backends: list[str],
    sizes: list[int],
) -> str:
    """The markdown table: medians, ratios of paired rounds, verdicts."""
    size_header = f"{_label(max(sizes))} / {_label(min(sizes))}"
    lines = [
        f"| database | consents | path | service /s | bare /s | service / bare (target) "
        f"| service p50 / p99 ms | bare p50 / p99 ms | {size_header} (within {SIZE_TOLERANCE}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarize(measured, backends, sizes):
        target = TARGETS[row.path]
        scaling = "—"
        if row.scaling is not None:
            within = 1 / SIZE_TOLERANCE <= row.scaling <= SIZE_TOLERANCE
            scaling = f"{row.scaling:.2f} {'ok' if within else 'MISS'}"
        lines.append(
            f"| {row.backend} | {_label(row.size)} | {row.path} "
            f"| {_median(row.service, 'per_second'):,.0f} "
            f"| {_median(row.bare, 'per_second'):,.0f} "
            f"| {row.ratio:.2f} (≥ {target}) {'ok' if row.ratio >= target else 'MISS'} "
            f"| {_median(row.service, 'p50_ms'):.1f} / {_median(row.service, 'p99_ms'):.1f} "
            f"| {_median(row.bare, 'p50_ms'):.1f} / {_median(row.bare, 'p99_ms'):.1f} "
            f"| {scaling} |"
        )
    return "\n".join(lines)


def results_run(
    measured: dict[tuple[str, int, str, str], list[load.Result]], args: argparse.Namespace
) -> results.Run:
    """The run's results file: each ratio with its target, the figures behind it in detail."""
    run = results.Run(
        "api_throughput",
        quick=args.quick,
        settings={
            "sizes": args.sizes,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "workers": args.workers,
            "worker_class": args.worker_class,
            "wrk": f"-t{args.threads} -c{args.connections}",
        },
    )
    bare_names = {"decisions": "bare select", "creates": "bare insert"}
    for row in summarize(measured, args.backends, args.sizes):
        service_rate = _median(row.service, "per_second")
        run.add(
            f"{row.path} / {bare_names[row.path]}, {_label(row.size)} consents",
            row.ratio,
            target=f">= {TARGETS[row.path]}",
            database=row.backend,
            detail=(
                f"{service_rate:,.0f} / {_median(row.bare, 'per_second'):,.0f} per s, "
                f"p99 {_median(row.service, 'p99_ms'):.0f} / {_median(row.bare, 'p99_ms'):.0f} ms"
            ),
        )
        if row.scaling is not None:
            # "Within 1.2" is two-sided; only the slow side is a regression.
            run.add(
                f"{row.path} {_label(max(args.sizes))} / {_label(min(args.sizes))}",
                row.scaling,
                target=f">= {1 / SIZE_TOLERANCE:.2f}",
                database=row.backend,
                detail=f"{service_rate:,.0f} per s at {_label(row.size)}",
            )
    return run


def _median(figures: list[load.Result], field: str) -> float:
    return statistics.median(getattr(result, field) for result in figures)


def _label(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1_000 and size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


if __name__ == "__main__":
    sys.exit(main())
