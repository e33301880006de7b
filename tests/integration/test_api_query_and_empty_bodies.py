"""Query strings reject unknown parameters; bodiless POSTs need no content type."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.integration.api_support import create_consent


@pytest.mark.parametrize(
    "path",
    ["/v1/consents?patient=pat-1", "/v1/events?afterr=3", "/v1/audit?actionn=read"],
)
def test_a_mistyped_query_parameter_is_422_not_an_unfiltered_list(
    client: FlaskClient, auth: dict[str, str], path: str
) -> None:
    create_consent(client, auth)
    response = client.get(path, headers=auth)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    fields = {error["field"] for error in response.get_json()["errors"]}
    assert fields == {path.split("?")[1].split("=")[0]}


def test_revoke_without_a_body_or_content_type_is_accepted(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    consent = create_consent(client, auth)
    response = client.post(f"/v1/consents/{consent['id']}/revoke", headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "revoked"
    assert response.get_json()["reason"] is None


def test_a_body_in_another_media_type_is_415_and_records_nothing(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    consent = create_consent(client, auth)
    response = client.post(
        f"/v1/consents/{consent['id']}/revoke",
        data="reason=moved",
        content_type="application/x-www-form-urlencoded",
        headers=auth,
    )
    assert response.status_code == 415
    assert client.get(f"/v1/consents/{consent['id']}", headers=auth).get_json()["version"] == 1
