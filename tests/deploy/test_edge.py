"""The serving edge of `consent-service serve`: slow, broken and hostile clients.

A real `consent-service serve` (EdgeWorker, 2 workers) on a loopback port,
driven with raw sockets where the test needs bytes no HTTP client sends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from consent_service.http.security import API_CSP, HEADERS
from tests.deploy.test_gunicorn import DECISION, Server, running_server

READ_TIMEOUT = 3
MAX_BODY = 20_000
EDGE_SETTINGS = {
    "CONSENT_REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
    "CONSENT_MAX_BODY_BYTES": str(MAX_BODY),
    "CONSENT_WEB_CONCURRENCY": "2",
}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("edge"), **EDGE_SETTINGS) as server:
        yield server


def exchange(server: Server, data: bytes, *, timeout: float = 15.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as client:
        with contextlib.suppress(OSError):
            client.sendall(data)
        return read_to_close(client)


def read_to_close(client: socket.socket) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(65536):
            received += chunk
    return received


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_edge_problem(response: bytes, status: int) -> dict[str, object]:
    """An answer made below Flask: problem+json, the app's security headers, a request id."""
    got, headers, body = parse(response)
    assert got == status, response[:500]
    assert headers["content-type"] == "application/problem+json"
    for name, value in {**HEADERS, "Content-Security-Policy": API_CSP}.items():
        assert headers[name.lower()] == value, name
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["request_id"] == headers["x-request-id"] != ""
    return problem


def post_head(server: Server, *lines: str) -> bytes:
    fields = [
        "POST /v1/decisions HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {server.api_key}",
        "Content-Type: application/json",
        *lines,
    ]
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def decision(server: Server) -> int:
    status, body = server.post_json("/v1/decisions", DECISION)
    assert status == 200, body
    return status


def test_a_bad_chunk_size_is_400_problem_json(edge: Server) -> None:
    response = exchange(edge, post_head(edge, "Transfer-Encoding: chunked") + b"zz\r\n")
    assert "hexadecimal" in str(assert_edge_problem(response, 400)["detail"])


def test_a_chunked_body_over_the_limit_is_413_like_the_same_body_with_content_length(
    edge: Server,
) -> None:
    body = json.dumps({**DECISION, "padding": "x" * MAX_BODY}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
        for i in range(0, len(body), 4096)
    )
    chunked = post_head(edge, "Transfer-Encoding: chunked") + chunks + b"0\r\n\r\n"
    with_length = post_head(edge, f"Content-Length: {len(body)}") + body
    for request in (chunked, with_length):
        problem = assert_edge_problem(exchange(edge, request), 413)
        assert str(MAX_BODY) in str(problem["detail"])


def test_a_head_too_big_is_431(edge: Server) -> None:
    response = exchange(edge, b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000)
    assert_edge_problem(response, 431)
    # A single header line over gunicorn's own field limit, inside the head limit.
    response = exchange(edge, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    assert_edge_problem(response, 431)


def test_errors_raised_by_gunicorns_parser_are_problem_json_too(edge: Server) -> None:
    assert_edge_problem(exchange(edge, b"NOT A REQUEST LINE\r\n\r\n"), 400)
    assert_edge_problem(exchange(edge, b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400)


def test_a_short_body_gets_408_within_the_timeout_and_the_worker_goes_on(edge: Server) -> None:
    started = time.monotonic()
    response = exchange(edge, post_head(edge, "Content-Length: 100") + b'{"patient_id"')
    waited = time.monotonic() - started
    problem = assert_edge_problem(response, 408)
    assert f"{READ_TIMEOUT} seconds" in str(problem["detail"])
    assert READ_TIMEOUT - 0.5 <= waited < READ_TIMEOUT + 4
    # Both workers still answer.
    for _ in range(6):
        decision(edge)


def test_pipelined_requests_are_answered_in_order(edge: Server) -> None:
    body = json.dumps(DECISION).encode()
    requests = (
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        + post_head(edge, f"Content-Length: {len(body)}")
        + body
        + b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
        + b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    response = exchange(edge, requests)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]
    assert statuses == [200, 200, 404, 200]
    assert b'"decision": "deny"' in response


class SlowClients:
    """Sockets that trickle headers (slowloris) or a body, reopened when the server drops them."""

    def __init__(self, server: Server, heads: int, bodies: int) -> None:
        self._server = server
        self._slots = ["head"] * heads + ["body"] * bodies
        self._sockets: list[socket.socket | None] = [None] * len(self._slots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.opened = 0

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for sock in self._sockets:
            if sock is not None:
                sock.close()

    def _open(self, kind: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._server.port), timeout=5)
        if kind == "head":
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        else:
            sock.sendall(post_head(self._server, "Content-Length: 10000") + b"{")
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            for index, kind in enumerate(self._slots):
                sock = self._sockets[index]
                try:
                    if sock is None:
                        self._sockets[index] = self._open(kind)
                        continue
                    with contextlib.suppress(BlockingIOError):
                        if sock.recv(4096) is not None:
                            raise ConnectionError("answered or closed")
                    sock.send(b"a")
                except OSError:
                    if sock is not None:
                        sock.close()
                    self._sockets[index] = None
            self._stop.wait(0.3)

    @property
    def open_now(self) -> int:
        return sum(sock is not None for sock in self._sockets)


@pytest.mark.slow
def test_slow_clients_do_not_delay_normal_requests(edge: Server) -> None:
    latencies: list[float] = []
    with SlowClients(edge, heads=200, bodies=50) as slow:
        deadline = time.monotonic() + 30
        while slow.open_now < 240:
            assert time.monotonic() < deadline, f"only {slow.open_now} slow sockets opened"
            time.sleep(0.05)
        # Long enough for slow sockets to time out (408) and be reopened.
        until = time.monotonic() + READ_TIMEOUT * 2
        while time.monotonic() < until or len(latencies) < 100:
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
            try:
                if len(latencies) % 2:
                    connection.request("GET", "/healthz")
                    assert connection.getresponse().status == 200
                else:
                    body = json.dumps(DECISION)
                    connection.request(
                        "POST",
                        "/v1/decisions",
                        body,
                        {
                            "Authorization": f"Bearer {edge.api_key}",
                            "Content-Type": "application/json",
                        },
                    )
                    assert connection.getresponse().status == 200
            finally:
                connection.close()
            latencies.append(time.monotonic() - started)
        assert slow.opened > 250, "the slow sockets were never dropped and reopened"
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 1.0, f"p99 {p99:.3f}s over {len(latencies)} requests"
