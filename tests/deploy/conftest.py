"""Rendering the helm chart in-process, with helm's own Go engine.

``helm-python-sdk`` bundles ``libhelm_c`` (Helm v4's SDK behind a C ABI),
so rendering, linting and schema validation need neither a helm binary
nor a network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "consent-service"
HERE = Path(__file__).resolve().parent
RELEASE = "consent"
NAMESPACE = "health"
FULLNAME = "consent-consent-service"


def values_file(name: str) -> dict[str, Any]:
    """A values file parsed the way ``helm -f`` parses it."""
    return helm.values_from_yaml((HERE / name).read_text())


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for an install."""
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload."""
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "Job"):
            yield obj["metadata"]["name"], spec["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def pod_environment(
    objects: list[dict[str, Any]], spec: dict[str, Any], ca_file: Path
) -> dict[str, str]:
    """What a pod's process sees in its environment, with stand-ins for the Secrets' values."""
    config_map = one(objects, "ConfigMap", FULLNAME)["data"]
    (container,) = spec["containers"]
    env: dict[str, str] = dict(config_map) if "envFrom" in container else {}
    stand_ins = {
        "CONSENT_DATABASE_URL": "postgresql+psycopg://consent:secret@pg.internal:5432/consent",
        "CONSENT_KAFKA_SASL_USERNAME": "consent-relay",
        "CONSENT_KAFKA_SASL_PASSWORD": "not-a-real-password",
        "CONSENT_SMTP_URL": "smtp+starttls://mailer:not-a-real-password@smtp.internal:587",
    }
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = variable["value"]
        else:
            env[name] = stand_ins.get(name, f"{name.lower()}-stand-in-0123456789abcdef")
    if "CONSENT_KAFKA_SSL_CAFILE" in env:
        env["CONSENT_KAFKA_SSL_CAFILE"] = str(ca_file)  # mounted from the CA Secret in a pod
    if "CONSENT_SMTP_CA_FILE" in env:
        env["CONSENT_SMTP_CA_FILE"] = str(ca_file)
    return env


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def production() -> dict[str, Any]:
    return values_file("values-production.yaml")


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, key by key (as a second ``-f`` would)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result
