"""The package's layering, read from the imports of every module (docs/architecture.md).

Every ``import`` and ``from ... import`` counts, also those inside functions:
a deferred import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "consent_service"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
MAX_LINES = 500
FLASK = ("flask", "flask_smorest", "werkzeug", "webargs")
# Modules that run outside a request, or below it: no Flask.
FLASK_FREE = (
    "consent_service.services",
    "consent_service.db",
    "consent_service.outbox",
    "consent_service.audit.chain",
    "consent_service.audit.checkpoints",
    "consent_service.audit.verification",
    "consent_service.audit.writer",
    "consent_service.config",
    "consent_service.identity",
    "consent_service.mail",
)
# What is written in the change's transaction; it must not lean on the broker's module.
LOG_SIDE = (
    "consent_service.outbox.writer",
    "consent_service.outbox.sequencer",
    "consent_service.outbox.envelope",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports, by absolute name (submodules resolved)."""
    path = modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules() else base)
    return frozenset(found)


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def offenders(importers: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    forbidden = tuple(forbidden)
    return sorted(
        f"{module} imports {target}"
        for module in modules()
        if within(module, importers)
        for target in imports(module)
        if within(target, forbidden)
    )


def test_the_walk_sees_the_whole_package() -> None:
    # A guard for the guard: a broken walk would make every rule below pass.
    assert len(modules()) > 50
    assert "consent_service.outbox.relay" in imports("consent_service.cli.relay")
    assert "kafka" in imports("consent_service.outbox.publisher")


def test_services_db_outbox_and_the_audit_chain_import_no_flask() -> None:
    assert offenders(FLASK_FREE, FLASK) == []


def test_api_and_web_do_not_import_each_other() -> None:
    assert offenders(["consent_service.api"], ["consent_service.web"]) == []
    assert offenders(["consent_service.web"], ["consent_service.api"]) == []


def test_the_fhir_face_takes_only_the_v1_schemas_from_api() -> None:
    # A posted FHIR Consent is validated by the very schema of POST /v1/consents.
    assert offenders(["consent_service.api"], ["consent_service.fhir"]) == []
    assert offenders(["consent_service.web"], ["consent_service.fhir"]) == []
    assert offenders(["consent_service.fhir"], ["consent_service.web"]) == []
    reaching_api = offenders(["consent_service.fhir"], ["consent_service.api"])
    assert {line.rpartition(" imports ")[2] for line in reaching_api} <= {
        "consent_service.api.schemas"
    }


def test_mail_takes_its_words_from_wording_not_from_the_web_form() -> None:
    assert offenders(["consent_service.mail"], ["consent_service.web", "consent_service.api"]) == []


def test_the_shared_http_layer_and_audit_import_no_face() -> None:
    faces = ["consent_service.api", "consent_service.web", "consent_service.fhir"]
    assert offenders(["consent_service.http"], faces) == []
    assert (
        offenders(["consent_service.audit"], ["consent_service.web", "consent_service.fhir"]) == []
    )


def test_lower_layers_do_not_import_the_faces() -> None:
    faces = ["consent_service.api", "consent_service.web", "consent_service.fhir"]
    faces.append("consent_service.http")
    lower = ["consent_service.services", "consent_service.db", "consent_service.outbox"]
    lower.append("consent_service.identity")
    assert offenders(lower, [*faces, "consent_service.cli", "consent_service.app"]) == []


def test_only_the_publisher_imports_kafka() -> None:
    users = sorted(
        module for module in modules() if any(within(name, ["kafka"]) for name in imports(module))
    )
    assert users == ["consent_service.outbox.publisher"]


def test_the_log_side_of_the_outbox_does_not_import_the_publisher() -> None:
    assert offenders(LOG_SIDE, ["consent_service.outbox.publisher"]) == []


def test_no_import_cycles() -> None:
    graph = {
        module: sorted(target for target in imports(module) if target in modules())
        for module in modules()
    }
    cycles = _cycles(graph)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_is_over_500_lines() -> None:
    long = {
        module: count
        for module, path in modules().items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found
