"""A soak: the whole system for minutes under a mixed load while parts of it fail.

    python benchmarks/soak.py --minutes M --postgres-url URL \
        [--bootstrap-servers HOST:PORT] --report PATH

Starts, on a fresh PostgreSQL database, API instances (``consent-service serve``,
each its own gunicorn on its own port, reaching PostgreSQL through a TCP proxy
the soak can cut), three relays (one active, two standby: a PostgreSQL
advisory lock decides), two subscriber kits (``consent-events listen``) and
a Tansu broker behind a proxy (unless ``--bootstrap-servers`` names one: then
broker faults are skipped). It measures a short maximum of the mixed load
(unless ``--rate``), drives half of it, and injects the faults of
``soak/faults.py`` one after another. Exit 0 only when the oracle holds:
every committed consent version is on the topic, in order per consent; each
subscriber's view equals the database; no 5xx and no failed connection outside
the fault windows; ``consent-service audit verify`` passes; memory is flat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka.admin import KafkaAdminClient, NewTopic
from soak import faults, oracle, report
from soak.cluster import Processes, start_processes
from soak.load import Load
from soak.processes import wait_until
from sqlalchemy.engine import make_url

from tests.support.broker import Proxy, start_broker

MEMORY_GROWTH_LIMIT_PCT = 25.0
CALIBRATION_WARMUP_S = 3.0


def main() -> int:
    args = _arguments()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="consent-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"soak {run_id}: {args.minutes} min, logs in {workdir}")
    with ExitStack() as cleanup:
        if args.bootstrap_servers:
            bootstrap, broker = args.bootstrap_servers, None
        else:
            broker = start_broker()
            cleanup.callback(broker.stop)
            bootstrap = broker.bootstrap
        topic = f"consent.soak.{run_id}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics(
            [NewTopic(topic, args.partitions, 1, topic_configs={"retention.ms": "-1"})]
        )
        admin.close()
        database_proxy = Proxy(make_url(args.postgres_url).port or 5432)
        cleanup.callback(database_proxy.close)
        processes = start_processes(
            args, workdir, bootstrap=bootstrap, topic=topic, database_port=database_proxy.port
        )
        cleanup.callback(processes.stop_all)
        result = _soak(args, run_id, processes, database_proxy, broker, topic, bootstrap)
    Path(args.report).write_text(json.dumps(result, indent=2) + "\n")
    _say(
        json.dumps(
            {key: value for key, value in result.items() if key not in ("operations", "faults")},
            indent=2,
        )
    )
    _say(
        f"report: {args.report}; oracle "
        + ("holds" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    )
    if not args.keep_database:
        processes.drop_database()
    return 0 if result["passed"] else 1


def _soak(
    args: argparse.Namespace,
    run_id: str,
    processes: Processes,
    database_proxy: Proxy,
    broker: Any,
    topic: str,
    bootstrap: str,
) -> dict[str, Any]:
    urls = [instance.base_url for instance in processes.apis]
    rate = args.rate
    if not rate:
        calibration = Load(urls, processes.api_key, threads=args.threads, run_id=f"{run_id}c")
        calibration.start(0)
        time.sleep(CALIBRATION_WARMUP_S)  # Workers import and connect on first use.
        began = time.monotonic() - calibration.started
        time.sleep(args.calibrate_seconds)  # The measuring period itself.
        calibration.stop()
        answered = [s for s in calibration.samples if 200 <= s.status < 400 and s.at_s >= began]
        maximum = len(answered) / args.calibrate_seconds
        rate = maximum / 2
        _say(
            f"measured maximum {maximum:.0f} req/s "
            f"({len(calibration.samples)} requests); driving {rate:.0f} req/s"
        )
    duration = args.minutes * 60
    load = Load(urls, processes.api_key, threads=args.threads, run_id=run_id)
    kinds = (
        list(faults.FAULTS)
        if broker is not None
        else [k for k in faults.FAULTS if k != "broker_outage"]
    )
    cluster = faults.Cluster(
        apis=processes.apis,
        relays=processes.relays,
        database_proxy=database_proxy,
        broker_proxy=broker.proxy if broker is not None else None,
        backlog=lambda before: oracle.backlog(processes.database_url, before),
    )
    warmup = min(30.0, duration * 0.15)
    schedule = faults.Schedule(
        cluster, kinds, start_s=warmup, end_s=duration * 0.85, clock_zero=load.started
    )
    memory: dict[str, list[tuple[float, float]]] = {}
    stop_memory = threading.Event()
    sampler = threading.Thread(
        target=_sample_memory,
        args=(processes, broker, load.started, memory, stop_memory),
        daemon=True,
    )
    load.start(rate)
    sampler.start()
    schedule.start()
    time.sleep(max(0.0, duration - (time.monotonic() - load.started)))  # The soak's length.
    schedule.finish()
    load.stop()
    stop_memory.set()
    sampler.join()
    _say(
        f"load stopped after {time.monotonic() - load.started:.0f} s, "
        f"{len(load.samples)} requests; draining"
    )
    try:
        drained_s = round(
            wait_until(
                lambda: oracle.backlog(processes.database_url) == 0,
                180,
                "outbox drained",
                interval=0.5,
            ),
            1,
        )
    except TimeoutError:
        drained_s = None
    # A graceful stop flushes the audit batches the workers still hold.
    for instance in processes.apis:
        instance.stop()
    versions, current = oracle.committed(processes.database_url)
    records = oracle.read_topic(bootstrap, topic, expected=len(versions))
    topic_figures = oracle.judge_topic(records, versions)
    views = oracle.wait_for_views(
        {s.name: s.store for s in processes.subscribers}, current, timeout=120
    )
    audit = oracle.audit_verify(processes.direct_env)
    result: dict[str, Any] = {
        "minutes": args.minutes,
        "rate_per_s": round(rate, 1),
        "api_instances": len(processes.apis),
        "workers_per_instance": args.workers,
        **report.requests_figures(load.samples, schedule.faults),
        "faults": [fault.as_json() for fault in schedule.faults],
        "fault_errors": schedule.errors,
        "topic": topic,
        "committed_versions": len(versions),
        "consents": len(current),
        **topic_figures,
        "outbox_drained_after_load_s": drained_s,
        "subscribers": [
            {"name": name, "mismatches": len(found), "examples": found[:5]}
            for name, found in views.items()
        ],
        "audit_verify": audit,
        "rss_growth_pct": report.rss_growth(memory, warmup_s=warmup),
        "rss_mib_last": {
            kind: round(points[-1][1] / 1024, 1) for kind, points in memory.items() if points
        },
        "operations": report.per_operation(load.samples, bucket_s=max(10.0, duration / 12)),
    }
    result["failures"] = _failures(result, kinds)
    result["passed"] = not result["failures"]
    return result


def _failures(result: dict[str, Any], kinds: list[str]) -> list[str]:
    checks = {
        "lost events": result["lost_events"] == 0 and result["committed_versions"] > 0,
        "out-of-order consents": result["out_of_order_consents"] == 0,
        "events on the topic no consent version explains": result["unexpected_on_topic"] == 0,
        "subscriber views differ from the database": all(
            s["mismatches"] == 0 for s in result["subscribers"]
        ),
        "5xx outside fault windows": result["http_5xx_outside_fault_windows"] == 0,
        "failed connections outside fault windows": result[
            "connection_failures_outside_fault_windows"
        ]
        == 0,
        "audit verify": result["audit_verify"]["ok"],
        "memory growth": all(
            g is None or g <= MEMORY_GROWTH_LIMIT_PCT for g in result["rss_growth_pct"].values()
        ),
        "faults that did not recover": not result["fault_errors"]
        and len(result["faults"]) == len(kinds),
        "outbox not drained": result["outbox_drained_after_load_s"] is not None,
    }
    return [name for name, holds in checks.items() if not holds]


def _sample_memory(
    processes: Processes,
    broker: Any,
    zero: float,
    memory: dict[str, list[tuple[float, float]]],
    stop: threading.Event,
) -> None:
    """Mean resident memory per process of each kind, every few seconds."""
    while not stop.wait(3.0):
        kinds: dict[str, list[int]] = {"api": [], "relay": [], "subscriber": []}
        for instance in processes.apis:
            if instance.alive():
                kinds["api"] += [
                    processes.rss_of(pid) for pid in [instance.pid, *instance.children()]
                ]
        kinds["relay"] = [relay.rss_kib() for relay in processes.relays if relay.alive()]
        kinds["subscriber"] = [s.rss_kib() for s in processes.subscribers if s.alive()]
        if broker is not None:
            kinds["broker"] = [processes.rss_of(broker.process.pid)]
        at = time.monotonic() - zero
        for kind, values in kinds.items():
            values = [value for value in values if value]
            if values:
                memory.setdefault(kind, []).append((at, sum(values) / len(values)))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="loaded period (fractions allowed)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CONSENT_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL (the soak makes its own database)",
    )
    parser.add_argument(
        "--bootstrap-servers", help="an existing Kafka broker; broker faults are then skipped"
    )
    parser.add_argument("--report", required=True, help="where to write the JSON report")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s (default: half the measured maximum)"
    )
    parser.add_argument("--calibrate-seconds", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=2, help="API instances (at least 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--threads", type=int, default=12, help="load generator threads")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--database-name", default=f"consent_soak_{os.environ.get('PYTEST_XDIST_WORKER', 'run')}"
    )
    parser.add_argument(
        "--workdir", help="logs and subscriber stores (default: a new temporary directory)"
    )
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    if not args.postgres_url:
        parser.error("--postgres-url (or CONSENT_TEST_POSTGRES_URL) is required")
    if args.instances < 2:
        parser.error("--instances: at least 2")
    return args


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
