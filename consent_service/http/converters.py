"""Path converters that name what is wrong with a malformed id instead of a bare 404.

Werkzeug's ``uuid`` and ``int`` converters simply do not match a malformed
segment, and the caller gets the framework's "The requested URL was not
found on the server" for ``/v1/consents/not-a-uuid``: true, but it does not
say that the route exists and the id is what is wrong. These converters
match any one segment and refuse a malformed one with a problem+json 404
that says so. They replace the built-in ``uuid`` and ``int`` converters of
the app (``install``), so the routes keep their usual spelling and their
OpenAPI types (they subclass the built-ins).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter, Map, UUIDConverter


class MalformedPathId(NotFound):
    """A path segment where an id belongs, not shaped like one (raised while routing)."""


class ProblemUUIDConverter(UUIDConverter):
    """Any one segment; a UUID is converted, anything else is a 404 saying "not a UUID"."""

    regex = "[^/]+"

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        # Same arguments as the built-in (``uuid(strict=False)``); case is always ignored.
        super().__init__(url_map)

    def to_python(self, value: str) -> uuid.UUID:
        try:
            return uuid.UUID(hex=value) if len(value) == 36 else _not_a_uuid()
        except ValueError:
            return _not_a_uuid()


class ProblemIntegerConverter(IntegerConverter):
    """Any one segment; digits are converted, anything else is a 404 saying "not a number"."""

    regex = "[^/]+"

    def to_python(self, value: str) -> int:
        if not value.isascii() or not value.isdigit() or len(value) > 10:
            raise MalformedPathId(
                "A number in the path (a version) is malformed: expected digits such as 1."
            )
        return int(value)


def _not_a_uuid() -> Any:
    raise MalformedPathId(
        "An id in the path is not a UUID: consent and consent request ids look like "
        "3fa85f64-5717-4562-b3fc-2c963f66afa6."
    )


def install(app: Flask) -> None:
    """Use these converters for every ``uuid`` and ``int`` route registered after this call."""
    app.url_map.converters["uuid"] = ProblemUUIDConverter
    app.url_map.converters["int"] = ProblemIntegerConverter
