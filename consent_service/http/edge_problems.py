"""The answers the edge worker makes itself, below the application.

They are problem+json like the application's errors and carry the same
security headers (``consent_service.http.security.HEADERS``, the API's
Content-Security-Policy) and an ``X-Request-Id``, so that a client, a log
reader or a scanner cannot tell a refusal at the edge from one by the app
by its form.
"""

from __future__ import annotations

import json
import logging
import re

from gunicorn.http import errors as http_errors

from consent_service.http.request_ids import client_request_id, new_request_id
from consent_service.http.security import API_CSP, HEADERS

STATUS_TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def problem_bytes(status: int, detail: str, request_id: str | None = None) -> bytes:
    """A complete HTTP/1.1 problem+json answer that closes the connection."""
    request_id = request_id or new_request_id()
    title = STATUS_TITLES.get(status, "Bad Request")
    body = {"type": "about:blank", "title": title, "status": status, "request_id": request_id}
    if detail:
        body["detail"] = detail
    payload = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/problem+json",
        "Content-Length": str(len(payload)),
        "Connection": "close",
        "Cache-Control": "no-store",
        "X-Request-Id": request_id,
        "Content-Security-Policy": API_CSP,
        **HEADERS,
    }
    head = f"HTTP/1.1 {status} {title}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + payload


def status_of(exc: BaseException) -> tuple[int, str]:
    """The status and detail gunicorn would answer for one of its errors."""
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName)):
        return 500, ""
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, str(exc)
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, str(exc)
    if isinstance(exc, http_errors.ForbiddenProxyRequest):
        return 403, "Request forbidden"
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417, str(exc)
    if isinstance(exc, http_errors.ConfigurationProblem):
        return 500, ""
    if isinstance(exc, http_errors.ParseException):
        return 400, str(exc)
    return 500, ""


access_log = logging.getLogger("consent_service.access")
_CLIENT_REQUEST_ID = re.compile(rb"\r\nX-Request-Id:[ \t]*([^\r\n]{1,200})", re.IGNORECASE)
_METHOD = re.compile(rb"([A-Z]{1,16}) ")


def log_refusal(status: int, request_id: str, received: bytes) -> None:
    """The JSON access line of an answer made at the edge, like the app's own lines.

    ``received`` is what had arrived of the request: its method and the
    caller's ``X-Request-Id`` (kept only as ``client_request_id``) are read
    from it when present. Never the path: it may hold a patient reference.
    """
    head = received[: received.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in received else received
    method = _METHOD.match(head)
    caller = _CLIENT_REQUEST_ID.search(head)
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method.group(1).decode() if method else None,
            "route": None,
            "status": status,
            "duration_ms": None,
            "client_id": None,
            "client_request_id": client_request_id(
                caller.group(1).decode("latin-1").strip() if caller else None
            ),
        },
    )
