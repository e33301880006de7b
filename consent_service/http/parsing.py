"""Request parsing that turns every malformed body into a 4xx, never a 500."""

from __future__ import annotations

import json
from typing import Any

from flask import Request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser

JSON_TYPES = ("application/json", "application/merge-patch+json")


class SafeJSONProvider(DefaultJSONProvider):
    """Deeply nested JSON is a malformed body (400), not a RecursionError."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class SafeParser(FlaskParser):
    def _raw_load_json(self, req: Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise  # webargs tells an empty body (missing) from a malformed one
        except (RecursionError, ValueError) as error:
            # ValueError: an integer literal past Python's 4300-digit conversion limit.
            return self._handle_invalid_json_error(error, req)  # type: ignore[arg-type]


class ConsentBlueprint(Blueprint):
    """A flask-smorest blueprint whose body parser survives hostile JSON."""

    ARGUMENTS_PARSER = SafeParser()
