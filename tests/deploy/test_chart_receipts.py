"""The chart's side of enforcement receipts: the SLA setting, the alert rules, the dashboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm

from tests.deploy.conftest import CHART_DIR, FULLNAME, NAMESPACE, merged, one, render
from tests.deploy.test_chart import exported_series


def _rules(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = one(objects, "PrometheusRule", FULLNAME)
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_the_sla_reaches_the_pods_and_the_alert(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    objects = render(chart, merged(production, {"enforcement": {"slaSeconds": 45}}))

    assert one(objects, "ConfigMap", FULLNAME)["data"]["CONSENT_ENFORCEMENT_SLA_SECONDS"] == "45"
    rule = one(objects, "PrometheusRule", FULLNAME)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    late = _rules(objects)["ConsentRevocationNotEnforced"]
    assert "consent_subscriber_late_revocations" in late["expr"]
    assert f'namespace="{NAMESPACE}"' in late["expr"]
    assert late["expr"].rstrip().endswith("> 0")
    assert "for" not in late
    assert "45 s" in late["annotations"]["summary"]
    # Alertmanager templates survive helm's own templating.
    assert "{{ $labels.subscriber }}" in late["annotations"]["summary"]


def test_the_rule_is_off_by_default_and_can_wait(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    assert not [o for o in render(chart, {}) if o["kind"] == "PrometheusRule"]
    objects = render(chart, merged(production, {"prometheusRule": {"for": "2m"}}))
    assert _rules(objects)["ConsentRevocationNotEnforced"]["for"] == "2m"


def test_alert_rules_query_only_metrics_the_service_exports(
    chart: helm.Chart, production: dict[str, Any], tmp_path: Path
) -> None:
    queried = {
        name
        for rule in _rules(render(chart, production)).values()
        for name in re.findall(r"\bconsent_[a-z_]+", rule["expr"])
    }
    assert queried
    assert queried - exported_series(tmp_path) == set()


def test_a_bad_sla_is_refused_by_the_values_schema() -> None:
    report = helm.lint(CHART_DIR, {"enforcement": {"slaSeconds": 0}}, strict=True)
    assert report["errors"]
