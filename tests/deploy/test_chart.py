"""The helm chart: lint, render, validate against Kubernetes, and hold its promises.

Rendered with helm's own engine (helm-python-sdk), validated with the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
fail), for the oldest Kubernetes the chart supports and the newest schema
kubernetes-validate ships.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from consent_service import gunicorn_conf
from consent_service.config import ConfigError, Settings
from tests.deploy.conftest import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    merged,
    one,
    pod_environment,
    pod_specs,
    render,
    values_file,
)

MIN_KUBE = "1.29.0"  # Chart.yaml kubeVersion
KUBE_VERSIONS = [MIN_KUBE, kubernetes_validate.latest_version()]
SECRET_ENV = {
    "CONSENT_DATABASE_URL",
    "CONSENT_SECRET_KEYS",
    "CONSENT_API_KEY_PEPPER",
    "CONSENT_AUDIT_KEYS",
    "CONSENT_KAFKA_SASL_USERNAME",
    "CONSENT_KAFKA_SASL_PASSWORD",
    "CONSENT_SMTP_URL",
}
# Kubernetes ships no schema for the Prometheus operator's CRD.
CRD_GROUPS = ("monitoring.coreos.com/",)

TLS = [{"secretName": "consent-tls", "hosts": ["consent.example.org"]}]
NO_RELAY = {
    "relay": {"enabled": False},
    "expiry": {"cronJob": {"enabled": True}},
    "autoscaling": {"enabled": False},
    "podDisruptionBudget": {"enabled": False},
    "serviceAccount": {"create": False},
}


MAIL = {
    "mail": {
        "existingSecret": "consent-service-smtp",
        "from": "Cabinet du Parc <noreply@cabinet.example.org>",
        "tls": {"caSecret": "smtp-ca"},
    },
    "networkPolicy": {"smtp": {"to": [{"ipBlock": {"cidr": "10.40.0.0/24"}}], "ports": [587]}},
}


def scenarios() -> dict[str, dict[str, Any]]:
    production = values_file("values-production.yaml")
    return {
        "default": {},
        "production": production,
        "production-with-mail": merged(production, MAIL),
        "production-with-cronjob": merged(production, {"expiry": {"cronJob": {"enabled": True}}}),
        "no-relay": NO_RELAY,
    }


SCENARIOS = scenarios()


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, chart: helm.Chart) -> list[dict[str, Any]]:
    return render(chart, SCENARIOS[request.param])


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_strict_finds_nothing_above_info(name: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[name], strict=True, kube_version=f"v{MIN_KUBE}")
    assert report["errors"] == []
    above_info = [m for m in report["messages"] if m["severity"] >= 2]
    assert above_info == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    scenario: list[dict[str, Any]], kube_version: str
) -> None:
    assert scenario
    for obj in scenario:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {error.message}")


def test_default_install_has_the_expected_objects(chart: helm.Chart) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render(chart))
    assert kinds == sorted(
        [
            ("ConfigMap", FULLNAME),
            ("CronJob", f"{FULLNAME}-audit-checkpoint"),
            ("CronJob", f"{FULLNAME}-audit-verify"),
            ("Deployment", f"{FULLNAME}-api"),
            ("Deployment", f"{FULLNAME}-relay"),
            ("HorizontalPodAutoscaler", f"{FULLNAME}-api"),
            ("Job", f"{FULLNAME}-migrate"),
            ("NetworkPolicy", f"{FULLNAME}-api"),
            ("NetworkPolicy", f"{FULLNAME}-jobs"),
            ("NetworkPolicy", f"{FULLNAME}-relay"),
            ("PodDisruptionBudget", f"{FULLNAME}-api"),
            ("Service", FULLNAME),
            ("Service", f"{FULLNAME}-relay-metrics"),
            ("ServiceAccount", FULLNAME),
        ]
    )


def test_production_adds_ingress_monitoring_and_dashboard(production: dict[str, Any]) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        objects = render(chart, production)
    ingress = one(objects, "Ingress", FULLNAME)
    assert ingress["spec"]["tls"] == [
        {"secretName": "consent-hds-example-org-tls", "hosts": ["consent.hds.example.org"]}
    ]
    paths = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert {"/v1", "/consent", "/fhir/r4", "/openapi.json", "/docs"} <= set(paths)
    assert not {"/", "/metrics", "/healthz", "/readyz"} & set(paths)

    monitor = one(objects, "ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    service_ports = {
        p["name"] for o in objects if o["kind"] == "Service" for p in o["spec"]["ports"]
    }
    assert ports == {"http", "metrics"} <= service_ports

    dashboard = one(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"uid": "consent-service"' in dashboard["data"]["consent-service.json"]


def test_every_pod_is_locked_down(scenario: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(scenario):
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["runAsNonRoot"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context.get("privileged", False) is False, name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name


def test_no_secret_value_is_ever_inline(scenario: list[dict[str, Any]]) -> None:
    assert not [o for o in scenario if o["kind"] == "Secret"]
    for name, spec in pod_specs(scenario):
        for container in spec["containers"]:
            for variable in container.get("env", []):
                if variable["name"] in SECRET_ENV:
                    assert "value" not in variable, (name, variable["name"])
                    assert "secretKeyRef" in variable["valueFrom"], (name, variable["name"])
    for config_map in (o for o in scenario if o["kind"] == "ConfigMap"):
        assert not SECRET_ENV & set(config_map.get("data", {})), config_map["metadata"]["name"]
    # No URL with credentials anywhere in what the chart renders.
    text = repr(scenario)
    assert not re.search(r"://[^/\s'\"]+:[^@/\s'\"]+@", text)


def test_secret_variables_cannot_be_smuggled_in_as_plain_config(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="CONSENT_DATABASE_URL"):
        render(chart, {"config": {"extraEnv": {"CONSENT_DATABASE_URL": "postgresql://u:p@h/d"}}})


def test_secrets_each_workload_gets(production: dict[str, Any], chart: helm.Chart) -> None:
    """Least privilege: Kafka credentials for the relay only, link keys and pepper for the API."""
    objects = render(chart, merged(production, {"expiry": {"cronJob": {"enabled": True}}}))
    secret_env = {
        name: {
            v["name"]
            for c in spec["containers"]
            for v in c.get("env", [])
            if v["name"] in SECRET_ENV
        }
        for name, spec in pod_specs(objects)
    }
    assert secret_env == {
        f"{FULLNAME}-api": {
            "CONSENT_DATABASE_URL",
            "CONSENT_SECRET_KEYS",
            "CONSENT_API_KEY_PEPPER",
            "CONSENT_AUDIT_KEYS",
        },
        f"{FULLNAME}-relay": {
            "CONSENT_DATABASE_URL",
            "CONSENT_AUDIT_KEYS",
            "CONSENT_KAFKA_SASL_USERNAME",
            "CONSENT_KAFKA_SASL_PASSWORD",
        },
        f"{FULLNAME}-migrate": {"CONSENT_DATABASE_URL"},
        f"{FULLNAME}-expire": {"CONSENT_DATABASE_URL", "CONSENT_AUDIT_KEYS"},
        f"{FULLNAME}-audit-checkpoint": {"CONSENT_DATABASE_URL", "CONSENT_AUDIT_KEYS"},
        f"{FULLNAME}-audit-verify": {"CONSENT_DATABASE_URL", "CONSENT_AUDIT_KEYS"},
    }
    relay = one(objects, "Deployment", f"{FULLNAME}-relay")["spec"]["template"]["spec"]
    ca_file = next(
        v["value"] for v in relay["containers"][0]["env"] if v["name"] == "CONSENT_KAFKA_SSL_CAFILE"
    )
    mount = next(m for m in relay["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca")
    assert ca_file == f"{mount['mountPath']}/ca.crt"
    assert next(v for v in relay["volumes"] if v["name"] == "kafka-ca")["secret"] == {
        "secretName": "kafka-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }


def test_mail_reaches_the_relay_alone(chart: helm.Chart) -> None:
    """The relay sends (server, keys, CA, SMTP egress); the API only learns mail is on."""
    objects = render(chart, SCENARIOS["production-with-mail"])
    env = {
        name: {v["name"]: v for c in spec["containers"] for v in c.get("env", [])}
        for name, spec in pod_specs(objects)
    }
    relay, api = env[f"{FULLNAME}-relay"], env[f"{FULLNAME}-api"]
    smtp_ref = {"name": "consent-service-smtp", "key": "smtp-url"}
    assert relay["CONSENT_SMTP_URL"]["valueFrom"]["secretKeyRef"] == smtp_ref
    assert api["CONSENT_SMTP_URL"]["valueFrom"]["secretKeyRef"] == smtp_ref
    assert "CONSENT_SECRET_KEYS" in relay and "CONSENT_SMTP_CA_FILE" not in api
    assert relay["CONSENT_SMTP_CA_FILE"]["value"] == "/etc/consent-service/smtp-ca/ca.crt"
    for name, variables in env.items():
        if name not in (f"{FULLNAME}-relay", f"{FULLNAME}-api"):
            assert "CONSENT_SMTP_URL" not in variables, name
    data = one(objects, "ConfigMap", FULLNAME)["data"]
    assert data["CONSENT_MAIL_FROM"] == "Cabinet du Parc <noreply@cabinet.example.org>"
    policies = _rules_by_policy(objects)
    relay_egress = {frozenset(_ports(r)): r.get("to") for r in policies["relay"]["egress"]}
    assert relay_egress[frozenset({("TCP", 587)})] == [{"ipBlock": {"cidr": "10.40.0.0/24"}}]
    for name in ("api", "jobs"):
        assert {("TCP", 587)} not in [_ports(r) for r in policies[name]["egress"]], name
    # Off by default: no SMTP anywhere.
    default = render(chart)
    assert "CONSENT_SMTP_URL" not in repr(default) and "CONSENT_MAIL_FROM" not in repr(default)


def test_api_probes_and_graceful_stop(chart: helm.Chart) -> None:
    deployment = one(render(chart), "Deployment", f"{FULLNAME}-api")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["args"] == ["serve", "--bind", "0.0.0.0:8000"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Kubernetes must not SIGKILL before gunicorn's own graceful stop ends.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + gunicorn_conf.graceful_timeout
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_relay_probes_use_its_metrics_port(chart: helm.Chart) -> None:
    objects = render(chart, {"relay": {"metricsPort": 9300, "replicas": 2}})
    relay = one(objects, "Deployment", f"{FULLNAME}-relay")
    assert relay["spec"]["replicas"] == 2
    (container,) = relay["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["relay"]
    assert container["ports"][0] == {"name": "metrics", "containerPort": 9300, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    config = one(objects, "ConfigMap", FULLNAME)["data"]
    assert config["CONSENT_RELAY_METRICS_PORT"] == "9300"


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(chart: helm.Chart) -> None:
    job = one(render(chart), "Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["args"] == ["db", "upgrade"]
    # A pre-install hook runs before the release's own objects exist.
    assert "envFrom" not in container
    assert "serviceAccountName" not in spec


def test_expiry_cronjob_is_optional_and_never_overlaps(chart: helm.Chart) -> None:
    assert f"{FULLNAME}-expire" not in {o["metadata"]["name"] for o in render(chart)}
    cron = one(render(chart, NO_RELAY), "CronJob", f"{FULLNAME}-expire")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["expire"]


def _rules_by_policy(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"].removeprefix(f"{FULLNAME}-"): o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }


def _ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def test_network_policies_default(chart: helm.Chart) -> None:
    policies = _rules_by_policy(render(chart))
    assert set(policies) == {"api", "relay", "jobs"}
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]

    (api_in,) = policies["api"]["ingress"]
    sources = [peer["namespaceSelector"]["matchLabels"] for peer in api_in["from"]]
    assert sources == [
        {"kubernetes.io/metadata.name": "ingress-nginx"},
        {"kubernetes.io/metadata.name": "monitoring"},
    ]
    assert _ports(api_in) == {("TCP", 8000)}
    (relay_in,) = policies["relay"]["ingress"]
    assert [p["namespaceSelector"]["matchLabels"] for p in relay_in["from"]] == [
        {"kubernetes.io/metadata.name": "monitoring"}
    ]
    assert _ports(relay_in) == {("TCP", 9102)}
    assert policies["jobs"]["ingress"] == []

    dns = {("UDP", 53), ("TCP", 53)}
    for name in ("api", "relay", "jobs"):
        egress = [_ports(rule) for rule in policies[name]["egress"]]
        # No Kafka configured: nobody may reach a broker.
        assert egress == [dns, {("TCP", 5432)}], name
        (dns_rule,) = [r for r in policies[name]["egress"] if _ports(r) == dns]
        assert dns_rule["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_network_policies_production(chart: helm.Chart, production: dict[str, Any]) -> None:
    policies = _rules_by_policy(render(chart, production))
    relay = {frozenset(_ports(r)): r.get("to") for r in policies["relay"]["egress"]}
    assert relay[frozenset({("TCP", 9093)})] == [{"ipBlock": {"cidr": "10.30.0.0/24"}}]
    assert relay[frozenset({("TCP", 5432)})] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    # Only the relay talks to Kafka.
    for name in ("api", "jobs"):
        assert {("TCP", 9093)} not in [_ports(r) for r in policies[name]["egress"]], name


def test_selectors_find_their_pods(scenario: list[dict[str, Any]]) -> None:
    """Services, the PDB, the HPA and NetworkPolicies all point at real pods."""

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        plain = selector.get("matchLabels", selector)
        exprs = selector.get("matchExpressions", []) if "matchLabels" in selector else []
        return all(labels.get(k) == v for k, v in plain.items()) and all(
            labels.get(e["key"]) in e["values"] for e in exprs
        )

    pods = []
    for obj in scenario:
        if obj["kind"] in ("Deployment", "Job"):
            pods.append(obj["spec"]["template"]["metadata"]["labels"])
        elif obj["kind"] == "CronJob":
            pods.append(obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    names = {o["metadata"]["name"] for o in scenario if o["kind"] == "Deployment"}
    for obj in scenario:
        kind = obj["kind"]
        if kind in ("Service", "PodDisruptionBudget", "Deployment"):
            selector = obj["spec"]["selector"]
        elif kind == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]
        elif kind == "HorizontalPodAutoscaler":
            assert obj["spec"]["scaleTargetRef"]["name"] in names
            continue
        else:
            continue
        assert any(matches(selector, labels) for labels in pods), (kind, obj["metadata"]["name"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}},
            "kafka.sasl.existingSecret: required",
        ),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.mechanism: required"),
        ({"ingress": {"enabled": True}}, "ingress.tls: required"),
        (
            {"ingress": {"enabled": True, "hosts": [{"host": "*.example.org"}], "tls": TLS}},
            "config.publicUrl: required when the first ingress host is a wildcard",
        ),
        ({"relay": {"enabled": False}}, "expiry.cronJob.enabled: must be true"),
        ({"mail": {"existingSecret": "smtp"}}, "mail.from: required"),
        (
            {"mail": {"existingSecret": "smtp", "from": "noreply@example.org"}},
            "config.publicUrl: required when mail.existingSecret is set",
        ),
        (
            merged(NO_RELAY, {"mail": {"existingSecret": "smtp", "from": "noreply@example.org"}}),
            "relay.enabled: must be true when mail.existingSecret is set",
        ),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas: must not exceed",
        ),
    ],
)
def test_inconsistent_values_fail_with_the_key_named(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(chart, values)


def test_a_values_file_violating_the_schema_fails_clearly(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        render(chart, values_file("values-invalid.yaml"))
    message = str(raised.value)
    assert "at '/api/port': got string, want integer" in message
    assert "at '/kafka/topicMode': value must be one of 'single', 'per-organization'" in message
    assert "additional properties 'autoscalling' not allowed" in message


def test_release_namespace_and_name_flow_through(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)[
        "consent-service/templates/NOTES.txt"
    ]
    assert f"kubectl -n {NAMESPACE} exec deploy/{FULLNAME}-api" in notes
    assert "consent-service clients create --org" in notes


def exported_series(tmp_path: Path) -> set[str]:
    """Every series name the API's and the relay's /metrics can show."""
    from prometheus_client import REGISTRY

    from consent_service.db.migrate import upgrade
    from consent_service.db.session import Database
    from consent_service.metrics import OutboxCollector
    from consent_service.outbox.relay_metrics import PoisonCollector
    from consent_service.receipt_metrics import SubscriberLagCollector

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade(url)
    database = Database(url)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    names = set()
    collectors = [
        REGISTRY,
        OutboxCollector(database),
        PoisonCollector(database),
        SubscriberLagCollector(database, 60.0),
    ]
    for collector in collectors:
        for family in collector.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    database.dispose()
    return names


def test_dashboard_queries_only_metrics_the_service_exports(tmp_path: Path) -> None:
    dashboard = json.loads((CHART_DIR / "dashboards" / "consent-service.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bconsent_[a-z_]+", target["expr"])
    }
    assert queried - exported_series(tmp_path) == set()
    # The figures the issue asks the dashboard and /metrics to show.
    for wanted in (
        "consent_http_requests_total",
        "consent_http_request_duration_seconds_bucket",
        "consent_decisions_total",
        "consent_changes_total",
        "consent_outbox_backlog_events",
        "consent_outbox_oldest_unpublished_age_seconds",
        "consent_relay_commit_to_ack_seconds_bucket",
        "consent_relay_publish_failures_total",
        "consent_subscriber_unacknowledged_changes",
        "consent_subscriber_revocation_lag_seconds",
        "consent_revocation_enforced_seconds_bucket",
    ):
        assert wanted in queried


def test_every_variable_the_chart_sets_is_read_by_the_service(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    """A misspelt variable would be silently ignored by the pods."""
    source = "\n".join(
        path.read_text() for path in (CHART_DIR.parents[1] / "consent_service").rglob("*.py")
    )
    objects = render(chart, merged(production, {"expiry": {"cronJob": {"enabled": True}}}))
    names = set(one(objects, "ConfigMap", FULLNAME)["data"])
    for _, spec in pod_specs(objects):
        names.update(v["name"] for c in spec["containers"] for v in c.get("env", []))
    assert names
    assert {name for name in names if f'"{name}"' not in source} == set()


def test_every_pod_starts_with_the_environment_the_chart_gives_it(
    scenario: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Each process validates every CONSENT_* variable it sees at start.

    A SASL mechanism in the shared ConfigMap, without the credentials that
    only the relay gets, once stopped the API and the jobs of any install
    with Kafka over SASL.
    """
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    for name, spec in pod_specs(scenario):
        env = pod_environment(scenario, spec, ca_file)
        try:
            Settings.from_env(env)
        except ConfigError as error:
            pytest.fail(f"{name}: {error}")


def test_only_the_relay_gets_kafka_client_settings(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    objects = render(chart, merged(production, {"expiry": {"cronJob": {"enabled": True}}}))
    assert not {n for n in one(objects, "ConfigMap", FULLNAME)["data"] if "SASL" in n}
    for name, spec in pod_specs(objects):
        kafka_env = {
            v["name"]: v.get("value")
            for v in spec["containers"][0].get("env", [])
            if v["name"].startswith("CONSENT_KAFKA_S")
        }
        if name == f"{FULLNAME}-relay":
            assert kafka_env["CONSENT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            assert kafka_env["CONSENT_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        else:
            assert kafka_env == {}, name


def _public_url(objects: list[dict[str, Any]]) -> str | None:
    value: str | None = one(objects, "ConfigMap", FULLNAME)["data"].get("CONSENT_PUBLIC_URL")
    return value


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, None),
        (
            {"ingress": {"enabled": True, "tls": TLS}},
            "https://consent.example.org",
        ),
        (
            {
                "ingress": {
                    "enabled": True,
                    "hosts": [{"host": "a.example.org"}, {"host": "b.example.org"}],
                    "tls": TLS,
                }
            },
            "https://a.example.org",
        ),
        (
            {
                "config": {"publicUrl": "https://patients.example.org/consent-service/"},
                "ingress": {"enabled": True, "hosts": [{"host": "*.example.org"}], "tls": TLS},
            },
            "https://patients.example.org/consent-service",
        ),
        ({"config": {"publicUrl": "http://127.0.0.1:8000"}}, "http://127.0.0.1:8000"),
    ],
)
def test_public_url_from_values_or_the_ingress(
    chart: helm.Chart, values: dict[str, Any], expected: str | None
) -> None:
    value = _public_url(render(chart, values))
    assert value == expected
    if value is not None:
        # The service takes it as it is rendered.
        assert Settings.from_env({"CONSENT_PUBLIC_URL": value}).public_url == value


def test_production_links_use_the_ingress_host(
    chart: helm.Chart, production: dict[str, Any]
) -> None:
    assert _public_url(render(chart, production)) == "https://consent.hds.example.org"
    notes = chart.render(production, name=RELEASE, namespace=NAMESPACE)[
        "consent-service/templates/NOTES.txt"
    ]
    assert "Patient form links start with: https://consent.hds.example.org" in notes


@pytest.mark.parametrize(
    "public_url",
    ["consent.example.org", "ftp://consent.example.org", "https://x.org/?a=1", "https://x.org/#f"],
)
def test_a_public_url_the_service_would_refuse_fails_the_schema(
    chart: helm.Chart, public_url: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match="/config/publicUrl"):
        render(chart, {"config": {"publicUrl": public_url}})
    with pytest.raises(ConfigError, match="CONSENT_PUBLIC_URL"):
        Settings.from_env({"CONSENT_PUBLIC_URL": public_url})


def _cron(objects: list[dict[str, Any]], suffix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A CronJob and its pod spec."""
    cron = one(objects, "CronJob", f"{FULLNAME}-{suffix}")
    return cron, cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_audit_cronjobs_checkpoint_and_verify_by_default(chart: helm.Chart) -> None:
    objects = render(chart)
    checkpoint, checkpoint_pod = _cron(objects, "audit-checkpoint")
    verify, verify_pod = _cron(objects, "audit-verify")
    # The checkpoint's JSON line goes to stdout, i.e. into the cluster's log pipeline.
    assert checkpoint_pod["containers"][0]["args"] == ["audit", "checkpoint"]
    # By default verify also checks the consent tables against the log.
    assert verify_pod["containers"][0]["args"] == ["audit", "verify", "--json", "--data"]
    _, chain_only = _cron(render(chart, {"audit": {"verify": {"data": False}}}), "audit-verify")
    assert chain_only["containers"][0]["args"] == ["audit", "verify", "--json"]
    assert checkpoint["spec"]["schedule"] == "*/5 * * * *"
    assert verify["spec"]["schedule"] == "30 2 * * *"
    for cron, pod in ((checkpoint, checkpoint_pod), (verify, verify_pod)):
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert cron["spec"]["failedJobsHistoryLimit"] >= 1  # alerting sees failed Jobs
        assert pod["restartPolicy"] == "Never"
        assert pod["serviceAccountName"] == FULLNAME
        component = cron["metadata"]["labels"]["app.kubernetes.io/component"]
        assert cron["spec"]["jobTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
            component
        )
    # A broken chain stays broken: retrying would only delay the alert.
    assert verify["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    # Verify reads the whole log; it gets more time than a checkpoint.
    deadline = "activeDeadlineSeconds"
    assert (
        verify["spec"]["jobTemplate"]["spec"][deadline]
        > (checkpoint["spec"]["jobTemplate"]["spec"][deadline])
    )


def test_audit_cronjobs_can_be_turned_off_or_annotated(chart: helm.Chart) -> None:
    off = {"audit": {"checkpoint": {"enabled": False}, "verify": {"enabled": False}}}
    assert not [o for o in render(chart, off) if "audit" in o["metadata"]["name"]]
    only_verify = render(chart, {"audit": {"checkpoint": {"enabled": False}}})
    assert [o["metadata"]["name"] for o in only_verify if o["kind"] == "CronJob"] == [
        f"{FULLNAME}-audit-verify"
    ]
    annotated = render(chart, {"audit": {"podAnnotations": {"logs.example.org/route": "worm"}}})
    for suffix in ("audit-checkpoint", "audit-verify"):
        cron, _ = _cron(annotated, suffix)
        pod_metadata = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
        assert pod_metadata["annotations"] == {"logs.example.org/route": "worm"}


def test_cronjob_names_leave_room_for_the_job_suffix(chart: helm.Chart) -> None:
    long_name = {"fullnameOverride": "consent-" + "x" * 55, "relay": {"enabled": False}}
    long_name["expiry"] = {"cronJob": {"enabled": True}}
    crons = [o for o in render(chart, long_name) if o["kind"] == "CronJob"]
    assert len(crons) == 3
    for cron in crons:
        name = cron["metadata"]["name"]
        assert len(name) <= 52 and not name.startswith("-"), name
    assert {c["metadata"]["name"].rsplit("x-", 1)[-1] for c in crons} == {
        "expire",
        "audit-checkpoint",
        "audit-verify",
    }


def test_every_pod_is_covered_by_exactly_one_network_policy(
    scenario: list[dict[str, Any]],
) -> None:
    policies = [o for o in scenario if o["kind"] == "NetworkPolicy"]
    for obj in scenario:
        if obj["kind"] in ("Deployment", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["kind"] == "CronJob":
            labels = obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        else:
            continue
        covering = [
            p["metadata"]["name"] for p in policies if _selects(p["spec"]["podSelector"], labels)
        ]
        assert len(covering) == 1, (obj["metadata"]["name"], covering)
        if obj["kind"] == "CronJob":
            assert covering == [f"{FULLNAME}-jobs"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    plain = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    expressions = all(
        e["operator"] == "In" and labels.get(e["key"]) in e["values"]
        for e in selector.get("matchExpressions", [])
    )
    return plain and expressions
