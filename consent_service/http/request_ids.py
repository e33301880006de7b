"""Request ids: made by the service for every request, never taken from the caller.

Each id is this process's random prefix and a counter (``3f9c0a6e12b4d875-1a``):
no system call per request, and unique across workers and pods, because the
prefix is drawn anew in every process, forked gunicorn workers included.
The id is returned in ``X-Request-Id``, stamped on every log line of the
request (the access line of a 413 or a 500 included) and recorded in the
request's audit entries.

A caller's own ``X-Request-Id`` only helps them find their request in our
logs: when it is a short, plain token it is logged as ``client_request_id``
on the access line, and nowhere else (two organizations may well send the
same one).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets

from flask import Flask, g, request

from consent_service.http.logs import request_id_var

CLIENT_HEADER = "X-Request-Id"
MAX_CLIENT_REQUEST_ID = 64
_CLIENT_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_CLIENT_REQUEST_ID}}}")


class _Sequence:
    """This process's prefix and counter, drawn again in a forked child."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        # ``next`` on an ``itertools.count`` is atomic under the GIL: threads
        # of one worker never share a number.
        self.counter = itertools.count(1)


_SEQUENCE = _Sequence()
os.register_at_fork(after_in_child=_SEQUENCE.reset)


def new_request_id() -> str:
    """A fresh id, unique across processes (random prefix) and within one (counter)."""
    return f"{_SEQUENCE.prefix}-{next(_SEQUENCE.counter):x}"


def client_request_id(value: str | None) -> str | None:
    """The caller's ``X-Request-Id`` when it is a plain token of at most 64 characters."""
    if value and _CLIENT_REQUEST_ID.fullmatch(value):
        return value
    return None


def register_request_ids(app: Flask) -> None:
    """Give every request its id before anything else runs (call before other hooks)."""
    app.before_request(_assign)
    app.teardown_request(_forget)


def _assign() -> None:
    g.request_id = new_request_id()
    g.client_request_id = client_request_id(request.headers.get(CLIENT_HEADER))
    request_id_var.set(g.request_id)


def _forget(_error: BaseException | None) -> None:
    # A log line written between requests must not carry the last one's id.
    request_id_var.set(None)
