"""The answers the edge worker makes itself, below the application.

They are problem+json like the application's errors and carry the same
security headers (``consent_service.http.security.HEADERS``, the API's
Content-Security-Policy) and an ``X-Request-Id``, so that a client, a log
reader or a scanner cannot tell a refusal at the edge from one by the app
by its form.
"""

from __future__ import annotations

import json

from gunicorn.http import errors as http_errors

from consent_service.http.request_ids import new_request_id
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
