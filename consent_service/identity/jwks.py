"""The issuer's signing keys (JWKS), fetched over HTTP and kept for a bounded time.

A worker fetches the key set on first use, from ``CONSENT_OIDC_JWKS_URL`` or
else from the ``jwks_uri`` of the issuer's discovery document
(``<issuer>/.well-known/openid-configuration``), and trusts it for
``max_age`` seconds. The rules that keep this safe and available:

- a token whose ``kid`` is not in the set makes the worker fetch the set
  again (the issuer rotated its keys), but at most once per
  ``refetch_interval``: a flood of tokens with made-up ``kid`` values cannot
  turn into a flood of requests to the provider;
- while the provider is unreachable, keys fetched less than ``max_age`` ago
  keep working; an unknown ``kid`` is refused (fails closed), and so is every
  token once the set is older than ``max_age``;
- only one thread of a worker fetches at a time; the others wait for it and
  use what it found.

Nothing here imports Flask: the clock and the fetch are passed in, so that
tests can drive them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization

from consent_service.config import is_key_source_url

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_S = 3.0
MAX_DOCUMENT_BYTES = 512 * 1024
DEFAULT_REFETCH_INTERVAL_S = 10.0

Fetch = Callable[[str], dict[str, Any]]


class KeySourceError(Exception):
    """The discovery document or key set could not be fetched or read."""


def fetch_json(url: str) -> dict[str, Any]:
    """GET ``url`` and read a JSON object of at most ``MAX_DOCUMENT_BYTES``."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - every URL here passed is_key_source_url
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as answer:  # noqa: S310 - as above
            body = answer.read(MAX_DOCUMENT_BYTES + 1)
    except (OSError, ValueError) as error:
        raise KeySourceError(f"{url}: {error}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise KeySourceError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise KeySourceError(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise KeySourceError(f"{url}: not a JSON object")
    return document


class SigningKeys:
    """One worker's copy of the issuer's key set; thread-safe."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        max_age: float,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL_S,
        fetch: Fetch = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._max_age = max_age
        self._refetch_interval = refetch_interval
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None

    def find(self, kid: str) -> Any:
        """The key named ``kid``, or None when the issuer (as far as we can know) has none."""
        with self._lock:
            now = self._clock()
            if self._keys is not None and now - self._fetched_at >= self._max_age:
                self._keys = None
            key = self._lookup(kid)
            if key is None and self._may_fetch(now):
                self._refresh(now)
                key = self._lookup(kid)
            return key

    def _lookup(self, kid: str) -> Any:
        if self._keys is None:
            return None
        try:
            return self._keys.get_by_kid(kid)
        except (JoseError, ValueError):
            return None

    def _may_fetch(self, now: float) -> bool:
        interval = min(self._refetch_interval, self._max_age)
        return self._attempted_at is None or now - self._attempted_at >= interval

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            url = self._jwks_url or self._discover()
            document = self._fetch(url)
            keys = KeySet.import_key_set(_signing_keys(document))
        except (KeySourceError, JoseError, ValueError, TypeError) as error:
            # Keys fetched earlier stay trusted until they are max_age old.
            log.warning("oidc signing keys not refreshed: %s", error)
            return
        self._keys = keys
        self._fetched_at = now

    def _discover(self) -> str:
        document = self._fetch(self._issuer.rstrip("/") + DISCOVERY_PATH)
        if document.get("issuer") != self._issuer:
            raise KeySourceError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not is_key_source_url(jwks_uri):
            raise KeySourceError("the discovery document has no usable jwks_uri")
        return jwks_uri


def _signing_keys(document: dict[str, Any]) -> KeySetSerialization:
    """The set's public signature keys that carry a ``kid`` (others cannot be chosen safely)."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise KeySourceError("the key set has no `keys` list")
    usable = [
        key
        for key in keys
        if isinstance(key, dict)
        and isinstance(key.get("kid"), str)
        and key.get("kty") in ("RSA", "EC")
        and key.get("use", "sig") == "sig"
        and "d" not in key
    ]
    return {"keys": usable}
