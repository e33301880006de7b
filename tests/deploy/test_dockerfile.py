"""The Dockerfile, without a Docker engine.

No engine runs on the development machines, so the build stage's steps
(COPY the files .dockerignore lets through, then the README's install) are
run here in a fresh virtualenv, and the installed service is exercised from
outside the source tree: what the image would contain, it contains.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"
CONSTRAINED = "--constraint constraints.txt"


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    argument: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[Instruction] = []
    stage = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage = argument.split(" AS ")[-1].strip() if " AS " in argument else argument
        found.append(Instruction(stage, keyword, " ".join(argument.split())))
    return found


def stage(name: str) -> list[Instruction]:
    return [i for i in instructions() if i.stage == name]


def env_pairs(argument: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(argument))


def build_context(destination: Path) -> None:
    """Copy the repository as `docker build` would send it (.dockerignore applied)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _pattern(line.lstrip("!").rstrip("/"))))

    def included(relative: str) -> bool:
        keep = True
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for negate, pattern in rules:
            if any(pattern.fullmatch(prefix) for prefix in prefixes):
                keep = negate
        return keep

    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not relative.startswith(".git/") and included(relative):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _pattern(glob: str) -> re.Pattern[str]:
    regex = ""
    index = 0
    while index < len(glob):
        if glob.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif glob.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif glob[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif glob[index] == "?":
            regex, index = regex + "[^/]", index + 1
        else:
            regex, index = regex + re.escape(glob[index]), index + 1
    return re.compile(regex)


def readme_install_steps() -> list[str]:
    """The README's install command, without the final `serve`."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if "-m venv" in line and "pip install" in line:
            steps = [step.strip() for step in line.split("&&")]
            return [step for step in steps if "consent-service serve" not in step]
    pytest.fail("README.md has no `python3 -m venv ... && pip install ...` line")


def test_build_stage_installs_as_the_readme_says_held_to_the_constraints() -> None:
    runs = [i.argument for i in stage("build") if i.keyword == "RUN"]
    # The image's virtualenv is $VIRTUAL_ENV where the README says .venv.
    as_readme = [" ".join(shlex.split(run)).replace("$VIRTUAL_ENV", ".venv") for run in runs]
    # The one difference: the image installs the pinned versions.
    constrained = [run for run in as_readme if CONSTRAINED in run]
    assert len(constrained) == 1 and constrained[0].endswith(" install " + CONSTRAINED + " .")
    assert [run.replace(CONSTRAINED + " ", "") for run in as_readme] == readme_install_steps()
    copies = [i.argument.split() for i in stage("build") if i.keyword == "COPY"]
    assert any("constraints.txt" in copy[:-1] for copy in copies)


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}; every line must be an exact pin."""
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and version.strip(), f"not an exact pin: {line!r}"
            found[canonicalize_name(name)] = version.strip()
    return found


def runtime_closure() -> dict[str, str]:
    """Every distribution `pip install .` brings in, from the installed metadata.

    Walks consent-service's requirements (and theirs, extras included) in the
    environment the tests run in; test-only extras are left out.
    """
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [("consent-service", frozenset())]
    while pending:
        name, extras = pending.pop()
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            key = canonicalize_name(requirement.name)
            if key not in found:
                found[key] = metadata.version(requirement.name)
                pending.append((requirement.name, frozenset(requirement.extras)))
            elif requirement.extras:
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def test_constraints_pin_every_runtime_dependency_and_nothing_else() -> None:
    pinned = pins()
    closure = runtime_closure()
    assert set(pinned) == set(closure), (
        "constraints.txt is out of date with pyproject.toml: run scripts/refresh-constraints\n"
        f"  missing: {sorted(set(closure) - set(pinned))}\n"
        f"  not needed: {sorted(set(pinned) - set(closure))}"
    )
    # Each pin satisfies the lower bounds pyproject.toml declares.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        requirement = Requirement(text)
        version = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (text, version)


def test_runtime_stage_is_slim_unprivileged_and_health_checked() -> None:
    runtime = stage("runtime")
    keywords = [i.keyword for i in runtime]
    assert runtime[0].argument == "${PYTHON_IMAGE} AS runtime"
    (user,) = [i.argument for i in runtime if i.keyword == "USER"]
    assert user == "10001:10001"  # the helm chart's runAsUser/runAsGroup
    (health,) = [i.argument for i in runtime if i.keyword == "HEALTHCHECK"]
    assert "/healthz" in health
    # Nothing is built or downloaded in the final image: it only copies the
    # virtualenv out of the build stage.
    runs = " ".join(i.argument for i in runtime if i.keyword == "RUN")
    assert not re.search(r"\b(pip|apt-get|apt|gcc|make|curl|wget)\b", runs)
    assert "COPY" in keywords
    copies = [i.argument for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]
    (entrypoint,) = [i.argument for i in runtime if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["consent-service"]
    (cmd,) = [i.argument for i in runtime if i.keyword == "CMD"]
    assert json.loads(cmd) == ["serve", "--bind", "0.0.0.0:8000"]


def test_dockerignore_lets_through_only_what_the_install_needs(tmp_path: Path) -> None:
    build_context(tmp_path)
    top = {path.name for path in tmp_path.iterdir()}
    assert top == {"pyproject.toml", "README.md", "constraints.txt", "consent_service"}
    assert not list(tmp_path.rglob("__pycache__"))
    assert not list(tmp_path.rglob("*.db"))


SMOKE = """
import json, sys
from consent_service import create_app
client = create_app().test_client()
assert client.get("/healthz").status_code == 200, "healthz"
assert client.get("/readyz").status_code == 200, "readyz"
assert client.get("/openapi.json").json["openapi"].startswith("3."), "openapi"
assert "consent_outbox_backlog_events" in client.get("/metrics").text, "metrics"
key = sys.argv[1]
headers = {"Authorization": "Bearer " + key}
body = {
    "patient_id": "p-1", "practitioner_id": "rpps:10003456789",
    "categories": ["radiographs"], "purposes": ["referral"], "decision": "permit",
    "collection": {"method": "paper", "evidence_ref": "scan-1"},
}
created = client.post("/v1/consents", json=body, headers=headers)
assert created.status_code == 201, created.text
print(json.dumps({"version": created.json["version"]}))
"""


@pytest.mark.slow
def test_build_stage_steps_install_a_working_service(tmp_path: Path) -> None:
    """Run the build stage in a fresh virtualenv, then use what it installed."""
    build = stage("build")
    source = tmp_path / "context"
    build_context(source)
    workdir = tmp_path / "image-src"
    venv = tmp_path / "venv"
    shim = tmp_path / "shim"
    shim.mkdir()
    # `python3` inside the image is the base image's Python; here, ours.
    (shim / "python3").symlink_to(sys.executable)
    env = {
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for instruction in build[1:]:
        if instruction.keyword == "ENV":
            values = env_pairs(instruction.argument)
            # The virtualenv lives in tmp here instead of /opt/venv; the pip
            # cache is kept (PIP_NO_CACHE_DIR only keeps the image small).
            env["VIRTUAL_ENV"] = str(venv)
            assert values["VIRTUAL_ENV"] == "/opt/venv"
        elif instruction.keyword == "WORKDIR":
            workdir.mkdir()
        elif instruction.keyword == "COPY":
            *sources, destination = shlex.split(instruction.argument)
            for name in sources:
                origin = source / name
                target = workdir / destination
                if destination.endswith("/"):
                    target = target / origin.name
                if origin.is_dir():
                    shutil.copytree(origin, target)
                else:
                    shutil.copy2(origin, target)
        elif instruction.keyword == "RUN":
            subprocess.run(
                ["sh", "-c", instruction.argument], cwd=workdir, env=env, check=True, timeout=900
            )
        else:
            pytest.fail(f"the test does not know how to run {instruction.keyword}")

    # Used from elsewhere, so that nothing is imported from the source tree.
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    service = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CONSENT_DATABASE_URL": f"sqlite:///{elsewhere / 'consent.db'}",
        "CONSENT_SECRET_KEYS": "dockerfile-test-key-0123456789",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            args, cwd=elsewhere, env=service, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # What the build installed is exactly what constraints.txt pins.
    frozen = run(str(venv / "bin" / "pip"), "freeze", "--exclude", "consent-service")
    installed = {
        canonicalize_name(name): version
        for name, _, version in (line.partition("==") for line in frozen.splitlines())
    }
    assert installed == pins()

    assert "serve" in run(str(venv / "bin" / "consent-service"), "--help")
    run(str(venv / "bin" / "consent-service"), "db", "upgrade")
    client = json.loads(
        run(
            str(venv / "bin" / "consent-service"),
            "clients",
            "create",
            "--org",
            "org-a",
            "--scopes",
            "consents:write",
            "--json",
        )
    )
    answer = run(str(venv / "bin" / "python"), "-c", SMOKE, client["api_key"])
    assert json.loads(answer.splitlines()[-1]) == {"version": 1}
