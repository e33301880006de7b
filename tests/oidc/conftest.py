"""A real OpenID provider for the token tests: oidc-provider (npm), run by provider.mjs.

scripts/test installs it (``npm ci --prefix tests/oidc``). The provider
listens on a free port of 127.0.0.1, issues client-credentials JWT access
tokens for ``AUDIENCE``, and stops when the fixture closes its standard input.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
AUDIENCE = "https://consent.example/api"
CLIENTS = [
    {
        "client_id": "partner-a",
        "client_secret": "partner-a-secret-0123456789abcdef",
        "scope": "consents:read consents:write decisions:read",
        "org": "practice-a",
    },
    {
        "client_id": "partner-b",
        "client_secret": "partner-b-secret-0123456789abcdef",
        "scope": "consents:read consents:write decisions:read",
        "org": "practice-b",
    },
    {
        "client_id": "practitioner-a",
        "client_secret": "practitioner-a-secret-0123456789ab",
        "scope": "decisions:read",
        "org": "practice-a",
        "rpps": "10003456789",
    },
    {
        "client_id": "reader-a",
        "client_secret": "reader-a-secret-0123456789abcdef",
        "scope": "consents:read",
        "org": "practice-a",
    },
]


@dataclass
class Provider:
    issuer: str

    def token(self, client_id: str, scope: str | None = None) -> str:
        """A client-credentials access token for ``client_id`` (all its scopes by default)."""
        client = next(c for c in CLIENTS if c["client_id"] == client_id)
        form = {
            "grant_type": "client_credentials",
            "resource": AUDIENCE,
            "scope": scope or client["scope"],
        }
        secret = base64.b64encode(f"{client_id}:{client['client_secret']}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - http to the loopback provider
            f"{self.issuer}/token",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Authorization": f"Basic {secret}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - as above
            body: dict[str, Any] = json.load(answer)
        assert body["token_type"] == "Bearer", body
        token: str = body["access_token"]
        return token

    def bearer(self, client_id: str, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(client_id, scope)}"}


@pytest.fixture(scope="session")
def provider() -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider is missing: run scripts/test (npm ci --prefix tests/oidc)")
    environment = {
        **os.environ,
        "OIDC_TEST_CONFIG": json.dumps({"audience": AUDIENCE, "clients": CLIENTS}),
    }
    process = subprocess.Popen(
        [node, str(HERE / "provider.mjs")],
        cwd=HERE,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield Provider(_issuer(process))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _issuer(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The issuer URL the provider prints once it listens (within ``timeout``)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"oidc-provider did not start within {timeout} s") from None
    kind, _, issuer = line.strip().partition(" ")
    assert kind == "issuer", f"oidc-provider said {line!r}"
    return issuer
