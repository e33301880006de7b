"""Structured JSON log lines, each carrying the request id of the request it belongs to.

Log records hold ids only (request, client, consent): never names, never
free text from patients, never a request body. Under gunicorn every line of
every worker goes to stderr as one JSON object, which a log shipper can
index without parsing prose.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from consent_service.timefmt import format_instant

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_MARK = "_consent_json_handler"
# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": format_instant(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            # The exception type only: a traceback can quote data from the request.
            line["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(line, default=str)


_FILTER = RequestIdFilter()


def configure_logging(level: int = logging.INFO) -> None:
    """Send this process's logs to stderr as JSON lines (idempotent).

    Left alone when the root logger already has handlers that are not ours
    (pytest's capture, an operator's own configuration).
    """
    root = logging.getLogger()
    if any(getattr(handler, _MARK, False) for handler in root.handlers):
        return
    if root.handlers:
        for handler in root.handlers:
            handler.addFilter(_FILTER)
        return
    handler = logging.StreamHandler()
    setattr(handler, _MARK, True)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_FILTER)
    root.addHandler(handler)
    root.setLevel(level)
