"""Request parsing that turns every malformed body into a 4xx, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import marshmallow as ma
from flask import Request, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Blueprint
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

JSON_TYPES = ("application/json", "application/merge-patch+json")


class DuplicateKey(ValueError):
    """A JSON object naming the same key twice: which one did the sender mean?"""


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing ``{"decision": "deny", "decision": "permit"}``.

    Python's ``json`` keeps the last value silently; another parser in front
    of this service (a gateway, an audit copy) may keep the first. Such a
    body is refused rather than read one way here and another way there.
    """
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise DuplicateKey(f"The key {name!r} appears twice in one JSON object.")
        seen.add(name)
    return found


class SafeJSONProvider(DefaultJSONProvider):
    """Deeply nested JSON and duplicate keys are a malformed body (400), not a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("object_pairs_hook", reject_duplicate_keys)
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class SafeParser(FlaskParser):
    """webargs' Flask parser, hardened, with each schema built once.

    webargs instantiates a schema given as a class on every request; that
    was 5% of a decision. A loaded schema keeps no state between loads, so
    one instance per class serves every request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schemas: dict[type[ma.Schema], ma.Schema] = {}

    def _get_schema(self, argmap: Any, req: Request) -> ma.Schema:
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas.setdefault(argmap, argmap())
            return schema
        return super()._get_schema(argmap, req)

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        try:
            return _parse_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise  # webargs tells an empty body (missing) from a malformed one
        except DuplicateKey as error:
            abort(400, exc=error, messages={"json": [str(error)]})
        except (RecursionError, ValueError) as error:
            # ValueError: an integer literal past Python's 4300-digit conversion limit.
            return self._handle_invalid_json_error(error, req)  # type: ignore[arg-type]


def _parse_json(data: bytes) -> Any:
    """``webargs.core.parse_json`` with duplicate keys refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError(
            f"Bytes decoding error : {error.reason}", doc=str(error.object), pos=error.start
        ) from error
    return json.loads(text, object_pairs_hook=reject_duplicate_keys)


class ConsentBlueprint(Blueprint):
    """A flask-smorest blueprint whose body parser survives hostile JSON."""

    ARGUMENTS_PARSER = SafeParser()


Plain = Callable[[Any], "dict[str, Any] | None"]


def arguments_with_plain_path(
    blp: Blueprint, schema: type[ma.Schema], plain: Plain
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``blp.arguments(schema)``, with ``plain`` tried first on the JSON body.

    ``plain`` returns the loaded body when it is sure the body is valid, else
    None, and then the schema parses the request as usual (its errors, its
    422). The OpenAPI document is the schema's, unchanged.
    """
    parse = blp.arguments(schema)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        parsed_view = parse(view)

        @wraps(parsed_view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            body = request.get_json(silent=True)
            loaded = plain(body) if body is not None else None
            if loaded is None:
                return parsed_view(*args, **kwargs)
            return view(*args, loaded, **kwargs)

        return wrapper

    return decorate
