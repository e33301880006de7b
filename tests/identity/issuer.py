"""A test issuer: keys made in the test, tokens signed with them, and a real JWKS server.

``KeyServer`` is an HTTP server on 127.0.0.1 (a free port) that serves the
issuer's discovery document and key set, counts the requests it answered,
and can be switched to answer 503 (an outage). The test stops it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

AUDIENCE = "https://consent.example/api"
JWKS_PATH = "/jwks.json"
AnyKey = RSAKey | ECKey


def make_key(kid: str, algorithm: str = "RS256") -> AnyKey:
    """A fresh private key for ``algorithm``, named ``kid``."""
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", parameters={"kid": kid})
    return RSAKey.generate_key(2048, parameters={"kid": kid})


class KeyServer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks.json`` for ``keys``."""

    def __init__(self) -> None:
        self.keys: list[AnyKey] = []
        self.down = False
        self.requests: list[str] = []
        self.discovery_issuer: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.document(self.path)
                status = 503 if server.down else (200 if body is not None else 404)
                payload = json.dumps(body if status == 200 else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        # A short poll interval lets shutdown() return at once, not half a second later.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def document(self, path: str) -> dict[str, Any] | None:
        if path == JWKS_PATH:
            return {"keys": [key.as_dict(private=False, use="sig") for key in self.keys]}
        if path == "/.well-known/openid-configuration":
            return {"issuer": self.discovery_issuer or self.url, "jwks_uri": self.jwks_url}
        return None

    def key_fetches(self) -> int:
        return self.requests.count(JWKS_PATH)

    @contextmanager
    def running(self) -> Iterator[KeyServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(timeout=10)


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """A partner token's claims, valid for five minutes; ``None`` values are left out."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "partner-app",
        "org": "practice-a",
        "scope": "consents:read consents:write decisions:read",
        "iat": now,
        "exp": now + 300,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: AnyKey, payload: dict[str, Any], algorithm: str = "RS256") -> str:
    header = {"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(header, payload, key, algorithms=[algorithm])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (for the forgeries a library would refuse to make)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"
