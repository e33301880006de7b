"""The chart's OpenID Connect settings: they reach the API pods, pass the service's own checks,
and open the API pods' egress to the provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from consent_service.config import Settings
from tests.deploy.conftest import (
    CHART_DIR,
    FULLNAME,
    merged,
    one,
    pod_environment,
    pod_specs,
    render,
)

OIDC = {
    "oidc": {
        "issuer": "https://auth.esante.gouv.fr/auth/realms/esante-wallet",
        "audience": "consent-service",
        "orgClaim": "https://consent.example/structure",
        "practitionerClaim": "preferred_username",
        "jwksMaxAgeSeconds": 600,
    },
    "networkPolicy": {"oidc": {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [443]}},
}


def test_the_settings_reach_the_api_and_are_valid(
    chart: helm.Chart, production: dict[str, Any], tmp_path: Path
) -> None:
    objects = render(chart, merged(production, OIDC))
    data = one(objects, "ConfigMap", FULLNAME)["data"]
    assert data["CONSENT_OIDC_ISSUER"] == OIDC["oidc"]["issuer"]
    assert data["CONSENT_OIDC_AUDIENCE"] == "consent-service"
    assert "CONSENT_OIDC_JWKS_URL" not in data  # discovery
    (api,) = [spec for name, spec in pod_specs(objects) if name == f"{FULLNAME}-api"]
    settings = Settings.from_env(pod_environment(objects, api, tmp_path / "ca.pem"))
    assert settings.oidc is not None
    assert settings.oidc.org_claim == "https://consent.example/structure"
    assert settings.oidc.practitioner_claim == "preferred_username"
    assert settings.oidc.jwks_max_age_seconds == 600


def test_the_api_may_reach_the_provider_only_when_configured(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    def egress_ports(values: dict[str, Any]) -> list[list[int]]:
        policy = one(render(chart, values), "NetworkPolicy", f"{FULLNAME}-api")
        return [
            [port["port"] for port in rule.get("ports", [])] for rule in policy["spec"]["egress"]
        ]

    assert [443] not in egress_ports(production)
    with_oidc = one(render(chart, merged(production, OIDC)), "NetworkPolicy", f"{FULLNAME}-api")
    (rule,) = [r for r in with_oidc["spec"]["egress"] if [p["port"] for p in r["ports"]] == [443]]
    assert rule["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert (
        "CONSENT_OIDC_ISSUER" not in one(render(chart, production), "ConfigMap", FULLNAME)["data"]
    )


@pytest.mark.parametrize(
    "oidc",
    [
        {"issuer": "https://idp.example"},
        {"issuer": "http://idp.example", "audience": "a"},
        {"issuer": "https://idp.example", "audience": "a", "jwksMaxAgeSeconds": 0},
        {"issuer": "https://idp.example", "audience": "a", "orgClaim": "has space"},
    ],
)
def test_bad_settings_are_refused_by_the_values_schema(oidc: dict[str, Any]) -> None:
    assert not helm.lint(CHART_DIR, OIDC, strict=True)["errors"]
    report = helm.lint(CHART_DIR, {"oidc": oidc}, strict=True)
    assert report["errors"]
