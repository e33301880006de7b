"""gunicorn with the shipped configuration, as `consent-service serve` starts it.

A real server on a loopback port over a SQLite file: health, readiness,
metrics summed over several worker processes, an access log that keeps
secrets out, and a SIGTERM that lets the request in flight finish.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consent_service.gunicorn_conf import TrustedForwardedFor, available_cpus
from tests.support.waiting import holds_for, wait_until

CLI = shutil.which("consent-service", path=str(Path(sys.executable).parent)) or "consent-service"
START_TIMEOUT = 30.0
SCOPES = "decisions:read,consents:write"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    api_key: str
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, headers=headers)

    def post_json(
        self, path: str, body: object, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        sent = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        return self.request("POST", path, json.dumps(body).encode(), {**sent, **(headers or {})})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONSENT_", "PROMETHEUS_", "GUNICORN_"))
    }
    env.update(
        CONSENT_DATABASE_URL=f"sqlite:///{tmp_path / 'consent.db'}",
        CONSENT_SECRET_KEYS="gunicorn-test-signing-key-0123456789",
        CONSENT_WEB_CONCURRENCY="3",
        CONSENT_RATE_LIMITS="off",
    )
    env.update(extra)
    return env


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def running_server(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """`consent-service serve` on a free loopback port, stopped on the way out."""
    env = service_env(tmp_path, **settings)
    cli(env, tmp_path, "db", "upgrade")
    created = json.loads(
        cli(env, tmp_path, "clients", "create", "--org", "org-a", "--scopes", SCOPES, "--json")
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CLI, "serve", "--bind", f"127.0.0.1:{port}"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(process, port, created["api_key"], log)
    try:
        wait_until_up(running)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path) as running:
        yield running


def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()
        with contextlib.suppress(OSError):
            if server.get("/healthz")[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer /healthz:\n{server.log.read_text()}")


def accepted(server_port: int, client_port: int) -> bool:
    """A server process has accepted the connection from ``client_port``.

    In /proc/net/tcp a connection still waiting in the listen queue has no
    socket inode (0); it gets one when a process accepts it.
    """
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9] != "0"
    return False


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


DECISION = {
    "patient_id": "patient-42",
    "practitioner_id": "rpps:10003456789",
    "category": "radiographs",
    "purpose": "referral",
}


def test_health_readiness_and_metrics_summed_over_workers(server: Server) -> None:
    for _ in range(30):
        assert server.get("/healthz")[0] == 200
    status, body = server.get("/readyz")
    assert status == 200
    assert json.loads(body)["database"] == "ok"
    status, body = server.post_json("/v1/decisions", DECISION)
    assert status == 200 and json.loads(body)["decision"] == "deny"

    # Three workers answered those requests; the scrape, whichever worker
    # serves it, must count every one of them.
    status, body = server.get("/metrics")
    assert status == 200
    text = body.decode()
    requests = samples(text, "consent_http_requests_total")
    healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert requests[healthz] >= 30
    assert requests[(("method", "POST"), ("route", "/v1/decisions"), ("status", "200"))] == 1
    assert samples(text, "consent_decisions_total") == {(("outcome", "deny"),): 1.0}
    latency = samples(text, "consent_http_request_duration_seconds_count")
    assert latency[(("method", "POST"), ("route", "/v1/decisions"))] == 1
    assert samples(text, "consent_outbox_backlog_events") == {(): 0.0}
    assert samples(text, "consent_outbox_query_up") == {(): 1.0}


GUNICORN_ACCESS_LOG = {"GUNICORN_CMD_ARGS": "--access-logfile -"}


@pytest.mark.parametrize("gunicorn_access_log", [False, True], ids=["default", "gunicorn-log-on"])
def test_logs_keep_query_strings_and_credentials_out(
    tmp_path: Path, gunicorn_access_log: bool
) -> None:
    settings = GUNICORN_ACCESS_LOG if gunicorn_access_log else {}
    with running_server(tmp_path, **settings) as server:
        server.get("/healthz?token=query-secret-123", {"Authorization": "Bearer header-secret-456"})
        server.post_json("/v1/decisions", DECISION)
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=40)
        log = server.log.read_text()
    # By default only the app's own JSON line records a request.
    assert ('"POST /v1/decisions HTTP/1.1" 200' in log) is gunicorn_access_log
    assert '"route": "/v1/decisions"' in log
    for secret in ("query-secret-123", "header-secret-456", server.api_key, "token="):
        assert secret not in log


def test_sigterm_lets_the_request_in_flight_finish(server: Server) -> None:
    body = json.dumps(DECISION).encode()
    head = (
        "POST /v1/decisions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as client:
        # The worker holds the head and part of the body, waiting for the
        # rest: the request is in flight when the signal arrives.
        client.sendall(head + body[:10])
        wait_until(lambda: accepted(server.port, client.getsockname()[1]), 10, "a worker to accept")
        os.killpg(server.process.pid, signal.SIGTERM)
        assert holds_for(lambda: server.process.poll() is None, 1.0), (
            "gunicorn quit with a request in flight"
        )
        client.sendall(body[10:])
        response = b""
        while chunk := client.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["decision"] == "deny"
    assert server.process.wait(timeout=40) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


CONSENT_REQUEST = {
    "patient_id": "patient-42",
    "practitioner_id": "rpps:10003456789",
    "practitioner_name": "Dr Test",
    "categories": ["radiographs"],
    "purposes": ["referral"],
}
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7, 127.0.0.1"}


def form_url_and_logged_client(server: Server) -> tuple[str, str]:
    status, body = server.post_json("/v1/consent-requests", CONSENT_REQUEST, FORWARDED)
    assert status == 201, body
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=40)
    log = server.log.read_text().splitlines()
    (line,) = [x for x in log if '"POST /v1/consent-requests HTTP/1.1"' in x]
    return json.loads(body)["form_url"], line.split()[0]


def test_forwarded_headers_from_a_trusted_proxy_are_believed(tmp_path: Path) -> None:
    trusting = {"CONSENT_TRUSTED_PROXIES": "127.0.0.0/8", **GUNICORN_ACCESS_LOG}
    with running_server(tmp_path, **trusting) as server:
        form_url, client = form_url_and_logged_client(server)
    assert form_url.startswith("https://")
    assert client == "203.0.113.7"


def test_forwarded_headers_from_anyone_else_are_ignored(tmp_path: Path) -> None:
    with running_server(tmp_path, **GUNICORN_ACCESS_LOG) as server:
        form_url, client = form_url_and_logged_client(server)
    assert form_url.startswith("http://")
    assert client == "127.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONSENT_WEB_CONCURRENCY", "lots", "CONSENT_WEB_CONCURRENCY: must be a whole number"),
        ("CONSENT_REQUEST_READ_TIMEOUT", "0", "CONSENT_REQUEST_READ_TIMEOUT: must be positive"),
        ("CONSENT_REQUEST_READ_TIMEOUT", "301", "CONSENT_REQUEST_READ_TIMEOUT: must be at most"),
        ("CONSENT_TRUSTED_PROXIES", "10.0.0.0/8,ingress", "CONSENT_TRUSTED_PROXIES: 'ingress'"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = service_env(tmp_path, **{variable: value})
    done = subprocess.run(
        [CLI, "serve", "--bind", f"127.0.0.1:{free_port()}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_workers_follow_the_container_cpu_limit_not_the_node(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == affinity


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "seen"),
    [
        ("10.1.0.5", "203.0.113.7", ["10.1.0.0/16"], "203.0.113.7"),
        # A client-supplied first hop cannot win over what the proxy saw.
        ("10.1.0.5", "6.6.6.6, 203.0.113.7", ["10.1.0.0/16"], "203.0.113.7"),
        ("10.1.0.5", "203.0.113.7, 10.1.0.9", ["10.1.0.0/16"], "203.0.113.7"),
        ("198.51.100.1", "203.0.113.7", ["10.1.0.0/16"], "198.51.100.1"),
        ("10.1.0.5", "not-an-address", ["10.1.0.0/16"], "10.1.0.5"),
        ("10.1.0.5", "10.1.0.7, 10.1.0.9", ["10.1.0.0/16"], "10.1.0.7"),
        ("198.51.100.1", "203.0.113.7", ["*"], "203.0.113.7"),
    ],
)
def test_client_address_comes_from_trusted_proxies_only(
    peer: str, forwarded: str, trusted: list[str], seen: str
) -> None:
    captured = {}

    def app(environ: dict[str, str], start_response: object) -> list[bytes]:
        captured["addr"] = environ["REMOTE_ADDR"]
        return []

    TrustedForwardedFor(app, trusted)(
        {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}, lambda *_: None
    )
    assert captured["addr"] == seen


def test_without_signing_keys_every_worker_shares_one_development_key(tmp_path: Path) -> None:
    """A link signed by one worker must open on any other (3 workers here)."""
    with running_server(tmp_path, CONSENT_SECRET_KEYS="") as server:
        status, body = server.post_json("/v1/consent-requests", CONSENT_REQUEST)
        assert status == 201, body
        parts = urllib.parse.urlsplit(json.loads(body)["form_url"])
        answers = {server.get(f"{parts.path}?{parts.query}")[0] for _ in range(12)}
    assert answers == {200}
