"""The gunicorn worker ``consent-service serve`` runs: slow clients cannot hold it.

A sync worker reads a request straight from its socket, so a client that
sends its headers or body slowly holds the whole process while it waits;
a few such sockets take the service offline. This worker waits on all its
connections at once (a selector over the listeners and the client
sockets, all non-blocking) and receives bytes into a buffer per
connection; ``RequestFramer`` says when a whole request is in. Only then is
the request handled, inline and one at a time like a sync worker: gunicorn's
own parser reads it from memory and ``gunicorn.http.wsgi.create`` builds
the environ, so forwarded-allow-ips and the secure-scheme headers behave
as before. The answer is written with the socket blocking, under a send
timeout.

Every loop turn sweeps the deadlines: a request not complete within
``CONSENT_REQUEST_READ_TIMEOUT`` seconds of its first byte gets 408 and the
connection closes; an idle keep-alive connection closes after gunicorn's
``keepalive``. A worker holds at most ``worker_connections`` connections
and stops accepting while full. On SIGTERM it stops accepting, finishes
the requests already arriving (until their read deadline) and closes idle
connections. Answers made here rather than by the app (400, 408, 413, 431,
500) are problem+json with the app's security headers and a request id.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.workers import base

from consent_service.config import ConfigError, Settings, _positive_int
from consent_service.http.edge_problems import log_refusal, problem_bytes, status_of
from consent_service.http.framing import FramingError, RequestFramer
from consent_service.http.request_ids import new_request_id

READ_TIMEOUT_ENV = "CONSENT_REQUEST_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT = 10
# Request line plus headers; gunicorn's parser then applies its own
# per-line and per-field limits (414, 431) to what fits in here.
MAX_HEAD_BYTES = 16 * 1024
RECEIVE_BYTES = 64 * 1024
# After an error answer, unread request bytes are drained this long so that
# closing does not reset the connection before the client reads the answer.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class EdgeLimits:
    """How long a request may take to arrive and how big its body may be."""

    read_timeout: float
    max_body_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EdgeLimits:
        """The limits from the environment; ``ConfigError`` names a bad variable."""
        read_timeout = _positive_int(env, READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT)
        if read_timeout > 300:
            raise ConfigError(f"{READ_TIMEOUT_ENV}: must be at most 300, got {read_timeout}")
        max_body = _positive_int(env, "CONSENT_MAX_BODY_BYTES", Settings.max_body_bytes)
        return cls(float(read_timeout), max_body)


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    addr: Any
    listener: socket.socket
    framer: RequestFramer
    # When the first byte of the request being received arrived; None
    # between requests.
    started: float | None
    last_active: float
    served: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    sent_continue: bool = False
    # Set once an error answer is sent: only draining until this instant.
    closing_at: float | None = None


class EdgeWorker(base.Worker):
    """See the module docstring."""

    def init_process(self) -> None:
        self.limits = EdgeLimits.from_env()
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self.accepting = False
        super().init_process()

    def run(self) -> None:
        self.log.info(
            "Worker %s serving: requests must arrive within %gs, bodies up to %d bytes",
            self.pid,
            self.limits.read_timeout,
            self.limits.max_body_bytes,
        )
        self.selector.register(self.PIPE[0], selectors.EVENT_READ, "wakeup")
        for listener in self.sockets:
            listener.setblocking(False)
        self._accept_new(True)
        stop_by: float | None = None
        while True:
            self.notify()
            if not self.alive and stop_by is None:
                stop_by = time.monotonic() + self.cfg.graceful_timeout
                self._accept_new(False)
            if stop_by is not None and (not self._busy() or time.monotonic() > stop_by):
                break
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "wakeup":
                    _drain_pipe(key.fd)
                elif isinstance(key.data, Connection):
                    self._receive(key.data)
                else:
                    self._accept(key.fileobj)
            self._sweep(time.monotonic())
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
        for connection in list(self.connections.values()):
            self._close(connection)

    def _busy(self) -> bool:
        """Some connection is still receiving a request or draining."""
        return any(c.buffer or c.closing_at for c in self.connections.values())

    def _accept_new(self, accept: bool) -> None:
        if accept == self.accepting:
            return
        for listener in self.sockets:
            if accept:
                self.selector.register(listener, selectors.EVENT_READ, None)
            else:
                self.selector.unregister(listener)
        self.accepting = accept

    def _accept(self, listener: Any) -> None:
        # One connection per loop turn, not every one waiting: the other
        # workers, woken by the same listener, take their share, so that
        # kept-alive connections do not all end up on one worker.
        if len(self.connections) < self.cfg.worker_connections:
            try:
                client, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE):
                    self.log.warning("accept failed: %s", error)
                    return
                raise
            client.setblocking(False)
            now = time.monotonic()
            connection = Connection(
                client,
                addr,
                listener,
                RequestFramer(MAX_HEAD_BYTES, self.limits.max_body_bytes),
                None,
                now,
            )
            self.connections[client.fileno()] = connection
            self.selector.register(client, selectors.EVENT_READ, connection)
        if len(self.connections) >= self.cfg.worker_connections:
            # Full: leave further connections in the kernel queue for other workers.
            self._accept_new(False)

    def _receive(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        if not data:
            self._close(connection)
            return
        now = time.monotonic()
        connection.last_active = now
        if connection.closing_at is not None:
            return  # Draining after an error answer: the bytes are dropped.
        if connection.started is None:
            connection.started = now
        connection.buffer += data
        self._serve_ready(connection)

    def _serve_ready(self, connection: Connection) -> None:
        """Handle every complete request in the buffer, in order."""
        while connection.buffer:
            try:
                length = connection.framer.complete(connection.buffer)
            except FramingError as error:
                self._refuse(connection, error.status, error.detail)
                return
            if length is None:
                self._maybe_continue(connection)
                return
            raw = bytes(connection.buffer[:length])
            del connection.buffer[:length]
            connection.framer.reset()
            connection.sent_continue = False
            connection.started = time.monotonic() if connection.buffer else None
            connection.served += 1
            if not self._handle(connection, raw):
                self._linger(connection)
                return
            connection.last_active = time.monotonic()

    def _maybe_continue(self, connection: Connection) -> None:
        framer = connection.framer
        if framer.has_body_pending and framer.expects_continue and not connection.sent_continue:
            connection.sent_continue = True
            self._send(connection, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _handle(self, connection: Connection, raw: bytes) -> bool:
        """Run one complete request through the app; True to keep the connection."""
        sock = connection.sock
        request = None
        sock.settimeout(self.limits.read_timeout)
        try:
            parser = gunicorn_http.get_parser(self.cfg, [raw], connection.addr)
            request = next(parser)
            return self._handle_request(connection, request)
        except (StopIteration, http_errors.NoMoreData):
            return False
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except Exception as error:  # noqa: BLE001 - every failure answers problem+json
            self.handle_error(request, sock, connection.addr, error)
            return False
        finally:
            if sock.fileno() >= 0:
                sock.setblocking(False)

    def _handle_request(self, connection: Connection, request: Any) -> bool:
        self.cfg.pre_request(self, request)
        started = datetime.now()
        # The framer already sent any "100 Continue" while the body arrived.
        request._expected_100_continue = False
        response, environ = wsgi.create(
            request, connection.sock, connection.addr, connection.listener.getsockname(), self.cfg
        )
        environ["wsgi.multithread"] = False
        self.nr += 1
        if self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
        if not self.alive:
            response.force_close()
        body = self.wsgi(environ, response.start_response)
        try:
            for chunk in body:
                response.write(chunk)
            response.close()
        finally:
            self.log.access(response, request, environ, datetime.now() - started)
            if hasattr(body, "close"):
                body.close()
            try:
                self.cfg.post_request(self, request, environ, response)
            except Exception:  # A hook must not take the worker down.
                self.log.exception("Exception in post_request hook")
        return not response.should_close()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's own errors, as problem+json with the security headers."""
        status, detail = status_of(exc)
        request_id = new_request_id()
        if status >= 500:
            self.log.exception("Error handling request rid=%s", request_id)
        else:
            self.log.warning("Invalid request from ip=%s rid=%s: %s", _ip(addr), request_id, exc)
        log_refusal(status, request_id, b"")
        try:
            client.setblocking(True)
            client.settimeout(self.limits.read_timeout)
            client.sendall(problem_bytes(status, detail, request_id))
        except OSError:
            self.log.debug("Failed to send error message.")

    def _refuse(self, connection: Connection, status: int, detail: str) -> None:
        """Answer an error, stop reading requests, linger so the answer arrives."""
        request_id = new_request_id()
        self.log.warning(
            "Refused request from ip=%s: %s %s rid=%s",
            _ip(connection.addr),
            status,
            detail,
            request_id,
        )
        log_refusal(status, request_id, bytes(connection.buffer))
        self._send(connection, problem_bytes(status, detail, request_id))
        self._linger(connection)

    def _linger(self, connection: Connection) -> None:
        """Close the sending side now, and the socket once the client is done.

        Closing a socket with unread request bytes in it makes the kernel
        reset the connection, which can destroy the answer before the
        client reads it; so the rest is read and dropped for a moment first.
        """
        if connection.sock.fileno() < 0:
            return
        connection.buffer.clear()
        connection.started = None
        connection.closing_at = time.monotonic() + LINGER_SECONDS
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)

    def _send(self, connection: Connection, data: bytes) -> None:
        sock = connection.sock
        try:
            sock.settimeout(self.limits.read_timeout)
            sock.sendall(data)
        except OSError:
            self._close(connection)
        else:
            sock.setblocking(False)

    def _sweep(self, now: float) -> None:
        """Close what has run out of time: a slow request, an idle connection."""
        for connection in list(self.connections.values()):
            if connection.closing_at is not None:
                if now > connection.closing_at:
                    self._close(connection)
            elif connection.started is not None:
                if now - connection.started > self.limits.read_timeout:
                    self._refuse(
                        connection,
                        408,
                        f"The request did not arrive within {self.limits.read_timeout:g} seconds.",
                    )
            else:
                # Idle: after an answer, for the keep-alive time; a new
                # connection that sends nothing, for the read timeout.
                idle = self.cfg.keepalive if connection.served else self.limits.read_timeout
                if not self.alive or now - connection.last_active > idle:
                    self._close(connection)

    def _close(self, connection: Connection) -> None:
        if self.connections.pop(connection.sock.fileno(), None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection.sock)
        connection.sock.close()
        if self.alive and len(self.connections) < self.cfg.worker_connections:
            self._accept_new(True)


def _ip(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr or "")


def _drain_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
