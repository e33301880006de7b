"""The commit point of API writes, with ``Idempotency-Key`` replay.

The stored answer is inserted in the same transaction as the change, so a
retried POST either finds the whole answer or nothing was recorded. Two
concurrent requests with one key: the second loses on the unique constraint,
its work is rolled back, and it answers with the first one's stored answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, json, request
from flask.wrappers import Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consent_service.http.context import principal, state
from consent_service.http.problems import problem
from consent_service.services.idempotency import find_answer, request_fingerprint, store_answer
from consent_service.timefmt import utcnow

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # Fields shown in this answer only: never stored for an Idempotency-Key
    # replay (a secret shown once, such as a verification code).
    shown_once: dict[str, Any] = field(default_factory=dict)


def write(compute: Callable[[Session], Answer]) -> Response:
    """Run ``compute`` in one transaction and answer with what it returns."""
    key = request.headers.get("Idempotency-Key")
    database = state().database
    if key is None:
        with database.transaction() as session:
            answer = compute(session)
        return _respond(answer)
    if not IDEMPOTENCY_KEY.match(key):
        return problem(400, "Bad Request", "Idempotency-Key: 1-255 visible ASCII characters.")
    client_id = principal().client_id
    method_path = f"{request.method} {request.path}"
    fingerprint = request_fingerprint(method_path, request.get_json(silent=True))
    try:
        with database.transaction() as session:
            stored = find_answer(session, client_id=client_id, key=key)
            if stored is None:
                answer = compute(session)
                store_answer(
                    session,
                    client_id=client_id,
                    key=key,
                    method_path=method_path,
                    request_hash=fingerprint,
                    status_code=answer.status,
                    body=answer.body,
                    headers=answer.headers,
                    now=utcnow(),
                )
                return _respond(answer)
    except IntegrityError:
        with database.transaction() as session:
            stored = find_answer(session, client_id=client_id, key=key)
        if stored is None:
            raise
    if stored.request_hash != fingerprint:
        return problem(
            422,
            "Idempotency key reused",
            "This Idempotency-Key was used with another request; use a new key.",
        )
    response = _respond(Answer(stored.status_code, stored.body, stored.headers))
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _respond(answer: Answer) -> Response:
    body = {**answer.body, **answer.shown_once} if answer.shown_once else answer.body
    return json_response(body, answer.status, answer.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer built directly, skipping a second serialisation pass."""
    response = current_app.response_class(
        json.dumps(body), status=status, mimetype="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response
