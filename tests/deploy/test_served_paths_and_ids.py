"""Through a real `consent-service serve`: ids with '/', request ids in the log, one key warning.

gunicorn decodes ``%2F`` before the app routes, like the test client, but
only a real server shows it; and only a real server has workers that could
each repeat a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from consent_service.config import DEVELOPMENT_KEY_WARNINGS
from tests.conftest import consent_body
from tests.deploy.test_gunicorn import cli, running_server, service_env

IDS = ["ins/123", "rpps/9", "a.b_c:d@e/f+g-h", "x/export"]


def test_ids_with_slashes_and_request_ids_through_gunicorn(tmp_path: Path) -> None:
    with running_server(tmp_path, CONSENT_SECRET_KEYS="") as server:
        reader = json.loads(
            cli(
                service_env(tmp_path),
                tmp_path,
                *("clients", "create", "--org", "org-a", "--scopes", "consents:read", "--json"),
            )
        )
        read = {"Authorization": f"Bearer {reader['api_key']}"}
        for identifier in IDS:
            status, body = server.post_json(
                "/v1/consents", consent_body(patient_id=identifier, practitioner_id=identifier)
            )
            assert status == 201, body
            path = quote(identifier, safe="")
            status, body = server.get(f"/v1/patients/{path}/export", headers=read)
            assert status == 200, body
            assert json.loads(body)["patient_id"] == identifier
            status, body = server.post_json(
                f"/v1/practitioners/{path}/revoke-all", {"reason": "left"}
            )
            assert status == 200, body
            assert len(json.loads(body)["revoked"]) == 1

        status, body = server.get("/v1/consents/not-a-uuid", headers=read)
        assert status == 404 and "not a UUID" in json.loads(body)["detail"]

        oversized = b"[" + b" " * (256 * 1024) + b"]"
        connection_headers = {
            "Authorization": f"Bearer {server.api_key}",
            "Content-Type": "application/json",
            "X-Request-Id": "partner-trace-1",
        }
        status, body = server.request("POST", "/v1/consents", oversized, connection_headers)
        assert status == 413
        problem = json.loads(body)
        assert str(256 * 1024) in problem["detail"]
        refused_id = problem["request_id"]
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"]
    access = [line for line in lines if line.get("logger") == "consent_service.access"]
    assert len({line["request_id"] for line in access}) == len(access)
    (line_413,) = [line for line in access if line["status"] == 413]
    assert line_413["request_id"] == refused_id != "partner-trace-1"
    assert line_413["client_request_id"] == "partner-trace-1"

    # serve warned once of each development key, and its 3 workers not at all.
    log = server.log.read_text()
    for warning in DEVELOPMENT_KEY_WARNINGS.values():
        assert log.count(warning) == 1, log[-3000:]
