"""The fault proxy of the broker and soak tests fails the way it says it does.

A fault that leaves a client hanging instead of failing tests the proxy, not
the service: the soak's database cut once held requests until gunicorn
killed the worker, because a request in flight at ``cut()`` never saw its
connection reset.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.broker import LOOPBACK, Proxy

DEADLINE_S = 5.0


class SlowUpstream:
    """Answers each message with ``answer`` once ``release`` is set."""

    def __init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self.release = threading.Event()
        self.received = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                while connection.recv(1024):
                    self.received.set()
                    self.release.wait(DEADLINE_S)
                    connection.sendall(b"answer")
            except OSError:
                return

    def close(self) -> None:
        self.release.set()
        self._listener.close()


@pytest.fixture
def upstream() -> Iterator[SlowUpstream]:
    server = SlowUpstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream: SlowUpstream) -> Iterator[Proxy]:
    proxy = Proxy(upstream.port)
    yield proxy
    proxy.close()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection((LOOPBACK, proxy.port), timeout=DEADLINE_S)


def assert_broken(client: socket.socket) -> None:
    """The next read fails or ends at once; a timeout means the client hangs."""
    try:
        data = client.recv(1024)
    except TimeoutError:
        pytest.fail(f"the connection neither answered nor failed within {DEADLINE_S} s")
    except ConnectionError:
        return
    assert data == b"", f"a cut connection delivered {data!r}"


def test_forwards_both_ways(proxy: Proxy, upstream: SlowUpstream) -> None:
    upstream.release.set()
    with connect(proxy) as client:
        client.sendall(b"question")
        assert client.recv(1024) == b"answer"


def test_cut_fails_a_request_in_flight(proxy: Proxy, upstream: SlowUpstream) -> None:
    with connect(proxy) as client:
        client.sendall(b"question")
        assert upstream.received.wait(DEADLINE_S)
        proxy.cut()
        upstream.release.set()
        assert_broken(client)


def test_cut_fails_an_idle_connection(proxy: Proxy, upstream: SlowUpstream) -> None:
    upstream.release.set()
    with connect(proxy) as client:
        client.sendall(b"question")
        assert client.recv(1024) == b"answer"
        proxy.cut()
        assert_broken(client)


def test_cut_refuses_new_connections_until_restored(proxy: Proxy, upstream: SlowUpstream) -> None:
    upstream.release.set()
    proxy.cut()
    try:
        client = connect(proxy)
    except ConnectionError:
        pass  # the reset came before connect() returned: refused all the same
    else:
        with client:
            assert_broken(client)
    proxy.restore()
    with connect(proxy) as client:
        client.sendall(b"question")
        assert client.recv(1024) == b"answer"


def test_reset_after_breaks_the_connection_mid_stream(proxy: Proxy, upstream: SlowUpstream) -> None:
    upstream.release.set()
    with connect(proxy) as client:
        client.sendall(b"question")
        assert client.recv(1024) == b"answer"
        # The bytes that trip the reset do reach the upstream: it must not
        # answer them, or its answer may be forwarded before the reset.
        upstream.release.clear()
        proxy.reset_after(4)
        client.sendall(b"more than four bytes")
        assert_broken(client)
