"""gunicorn settings for ``consent-service serve``.

Loaded with ``-c python:consent_service.gunicorn_conf``; gunicorn reads the
module-level names below. Operators tune it with ``CONSENT_WEB_CONCURRENCY``
(worker processes), ``CONSENT_REQUEST_READ_TIMEOUT`` (seconds a request may
take to arrive), ``CONSENT_MAX_BODY_BYTES`` and ``CONSENT_TRUSTED_PROXIES``
(who may set ``X-Forwarded-*``); a bad value stops start-up with one line
naming the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consent_service.config import ConfigError, Settings
from consent_service.http.worker import EdgeLimits
from consent_service.metrics import MULTIPROC_DIR_ENV
from consent_service.ratelimits import prepare_counter_store

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may really use.

    ``os.cpu_count()`` reports the node: a pod limited to one CPU on a
    32-core node would otherwise start 64 workers, each with its own
    database pool. The affinity mask is capped by the cgroup CPU quota
    (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), rounded up.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity mask
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def _cgroup_cpu_quota(root: Path) -> float | None:
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def _env_int(name: str, default: int, *, minimum: int = 1, maximum: int = 256) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"{name}: must be a whole number, got {raw!r}")
    if not minimum <= value <= maximum:
        sys.exit(f"{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def _trusted_proxies(raw: str) -> list[str]:
    """Validate ``CONSENT_TRUSTED_PROXIES`` (addresses or CIDRs, or ``*``)."""
    entries = [part.strip() for part in raw.split(",") if part.strip()]
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            sys.exit(f"CONSENT_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network")
    return entries


class TrustedForwardedFor:
    """WSGI middleware: the client address from ``X-Forwarded-For``, if a trusted proxy says so.

    gunicorn itself only honours the scheme header; ``REMOTE_ADDR`` stays the
    peer, which behind an ingress is the ingress controller for every patient
    (one shared rate-limit bucket, one address in every log). The header is
    read from the right, skipping trusted proxies: the first address that is
    not one is the client. From an untrusted peer the header is ignored, so
    a client cannot choose its own address.
    """

    def __init__(self, app: Callable[..., Any], trusted: list[str]) -> None:
        self._app = app
        self._any = "*" in trusted
        self._networks = [ipaddress.ip_network(entry) for entry in trusted if entry != "*"]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return self._any or any(ip in network for network in self._networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and self._is_trusted(environ.get("REMOTE_ADDR", "")):
            client = self._client(forwarded)
            if client is not None:
                environ["REMOTE_ADDR"] = client
        return self._app(environ, start_response)

    def _client(self, forwarded: str) -> str | None:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        untrusted = [hop for hop in hops if not self._is_trusted(hop)]
        # The right-most address no trusted proxy vouches for; if every hop
        # is a trusted proxy, the first of them.
        client = untrusted[-1] if untrusted else hops[0] if hops else None
        return client if client is not None and _is_address(client) else None


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Workers: 2 per core measured best for throughput and tail. Each is an
# EdgeWorker: it receives requests from all its connections at once and
# hands only complete ones to the app, one at a time, so slow or broken
# clients cannot hold it (see consent_service/http/worker.py).
workers = _env_int("CONSENT_WEB_CONCURRENCY", 2 * available_cpus())
worker_class = "consent_service.http.worker.EdgeWorker"
# Connections one worker holds open (most of them idle or still arriving);
# below the usual 1024 open files per process.
worker_connections = 512
try:
    EDGE_LIMITS = EdgeLimits.from_env()
except ConfigError as error:
    sys.exit(str(error))
if os.environ.get("CONSENT_THREADS", "").strip():
    print("CONSENT_THREADS is no longer used: ignored (see docs/operations.md)", file=sys.stderr)

# Timeouts: a request is killed after 30 s of handling (PostgreSQL
# statements stop at 10 s); one that has not fully arrived within
# CONSENT_REQUEST_READ_TIMEOUT (10 s) gets 408; on SIGTERM a worker gets
# 30 s to finish what it is doing. The chart's
# terminationGracePeriodSeconds (45) covers this plus preStop.
timeout = 30
graceful_timeout = 30
keepalive = 5

# No recycling by request count: each new worker pid adds files to the
# Prometheus directory, and a scrape reads them all.
max_requests = 0

# Forwarded headers: only peers named here may say "this was HTTPS"
# (X-Forwarded-Proto, which decides the scheme of the form links) or who
# the client was (X-Forwarded-For, see TrustedForwardedFor). Empty trusts
# nobody; in the chart, set it to the ingress controllers' pod network.
TRUSTED_PROXIES = _trusted_proxies(os.environ.get("CONSENT_TRUSTED_PROXIES", ""))
forwarded_allow_ips = ",".join(TRUSTED_PROXIES)
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Logs on stdout/stderr. The app writes its own JSON access line for every
# request (route template, request id, client id: never a raw path, which
# may hold a patient reference), so gunicorn's is off. Turned on with
# GUNICORN_CMD_ARGS="--access-logfile -", it logs the path without its query
# string (%(U)s, never %(r)s), no request headers at all (so no
# Authorization), and the request id to join with the app's line.
accesslog = None
errorlog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'

proc_name = "consent-service"
# The pod's root filesystem is read-only: no control socket in $HOME, and
# worker heartbeats in memory rather than on disk.
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # noqa: S108 - RAM disk, not a shared temp file

_created_metrics_dirs: list[str] = []


def on_starting(server: Any) -> None:
    """Prepare what every worker needs before any of them forks.

    The rate-limit counters' SQLite file and table are created here, once:
    created by each worker at boot, two of them could race.

    A directory given by the operator is emptied (files from an earlier run
    would be added to this one's counters); otherwise a fresh one is made
    under the temporary directory and removed at exit.
    """
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        path = tempfile.mkdtemp(prefix="consent-metrics-")
        os.environ[MULTIPROC_DIR_ENV] = path
        _created_metrics_dirs.append(path)
    _use_multiprocess_values()
    server.log.info("Prometheus multiprocess directory: %s", path)
    prepare_counter_store(
        os.environ.get("CONSENT_DATABASE_URL", "").strip() or Settings.database_url,
        os.environ.get("CONSENT_RATE_LIMITS", "").strip() or Settings.rate_limits,
        os.environ.get("CONSENT_RATE_LIMIT_STORAGE", "").strip() or Settings.rate_limit_storage,
    )


def _use_multiprocess_values() -> None:
    # prometheus_client picks its value class when it is first imported, and
    # importing this module already imported it (through consent_service).
    # Metric values are created on first use of a label set, in the workers,
    # so switching the class here, before they fork, makes every one of them
    # file-backed.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def post_worker_init(worker: Any) -> None:
    """Put the client-address middleware around the app each worker loaded."""
    if TRUSTED_PROXIES:
        worker.wsgi = TrustedForwardedFor(worker.wsgi, TRUSTED_PROXIES)


def child_exit(server: Any, worker: Any) -> None:
    """Let a dead worker's live gauges go; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    for path in _created_metrics_dirs:
        shutil.rmtree(path, ignore_errors=True)
