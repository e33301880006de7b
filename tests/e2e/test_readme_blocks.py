"""The README's shell blocks, pasted in order into one fresh shell, work.

Every ```sh block of README.md runs, in order, in one bash process started in
a fresh temporary directory, against the ``consent-service`` installed in the
virtualenv that runs the tests (linked as ``.venv`` there, where the README
expects it). The only change made to the text is the port: the README's
127.0.0.1:8000 becomes a free port, so that the test never meets another
server. A command that fails anywhere in a block is reported with its block
(an ERR trap), and each block's key output is checked. The server the first
block starts in the background is stopped at the end, with its process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:8000"
FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARK = "::readme-block::"
FAILED = "::readme-failed::"


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```sh blocks, in order (other fences are prose or output)."""
    return [match.group(1) for match in FENCE.finditer(text)]


def block_doing(blocks: list[str], command: str) -> int:
    """The number (from 1) of the one block that runs ``command``."""
    numbers = [n for n, block in enumerate(blocks, start=1) if command in block]
    assert len(numbers) == 1, f"expected one README block running {command!r}, found {numbers}"
    return numbers[0]


def driver_script(blocks: list[str]) -> str:
    """One script that runs the blocks in order in the same shell, marking each one.

    The ERR trap reports every failing command (pipelines included) without
    stopping, as a pasted block would go on; the marker before each block
    splits the output per block.
    """
    lines = [
        "set -o pipefail",
        f"trap 'echo \"{FAILED} $BASH_COMMAND (status $?)\"' ERR",
    ]
    for number, block in enumerate(blocks, start=1):
        # curl prints bodies without a final newline: start the marker on its own line.
        lines += [f"echo; echo '{MARK}{number}'", block]
    return "\n".join(lines) + "\n"


def split_output(output: str) -> dict[int, str]:
    """Each block's output by its number; what the driver prints before block 1 is dropped."""
    parts: dict[int, str] = {}
    current = 0
    for line in output.splitlines(keepends=True):
        if line.startswith(MARK):
            current = int(line[len(MARK) :])
            parts[current] = ""
        elif current:
            parts[current] += line
    return parts


def json_documents(output: str) -> list[object]:
    """The JSON documents printed one after the other, with or without newlines between."""
    decoder = json.JSONDecoder()
    documents: list[object] = []
    index = 0
    while True:
        index = min(
            (i for i in (output.find("{", index), output.find("[", index)) if i >= 0), default=-1
        )
        if index < 0:
            return documents
        document, index = decoder.raw_decode(output, index)
        documents.append(document)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def process_group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(group: int) -> None:
    """SIGTERM the group (gunicorn stops gracefully), SIGKILL what is left after 40 s."""
    if not process_group_alive(group):
        return
    os.killpg(group, signal.SIGTERM)
    try:
        wait_until(lambda: not process_group_alive(group), timeout=40, what="the server to stop")
    except AssertionError:
        os.killpg(group, signal.SIGKILL)


def test_the_readme_blocks_compose_in_one_fresh_shell(tmp_path: Path) -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    # The blocks whose output is checked, found by what they do (other blocks
    # may come and go; they must still run without a failing command).
    start = block_doing(blocks, "consent-service serve")
    first_steps = block_doing(blocks, "clients create")
    consent_request = block_doing(blocks, "/v1/consent-requests")
    assert start == 1, "the first block should start the service"

    port = free_port()
    address = f"127.0.0.1:{port}"
    script = driver_script([block.replace(README_ADDRESS, address) for block in blocks])
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CONSENT_", "GUNICORN_", "PROMETHEUS_"))
    }
    output_path = tmp_path / "output.txt"
    with output_path.open("w") as output:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the background server joins this group
        )
    try:
        try:
            status = shell.wait(timeout=240)
        except subprocess.TimeoutExpired:
            shell.kill()
            raise
        text = output_path.read_text()
        server_log = tmp_path / "consent-service.log"
        log_text = server_log.read_text() if server_log.exists() else "(no server log)"
        context = f"\n--- output ---\n{text}\n--- server log ---\n{log_text[-4000:]}"
        assert status == 0, f"the shell exited with {status}{context}"
        failures = [line for line in text.splitlines() if line.startswith(FAILED)]
        assert not failures, f"commands failed: {failures}{context}"

        by_block = split_output(text)
        assert sorted(by_block) == list(range(1, len(blocks) + 1)), context
        check_start(by_block[start], context)
        check_first_steps(by_block[first_steps], context)
        check_consent_request(by_block[consent_request], address, context)
        assert answers(f"http://{address}/healthz"), "the server should still be up" + context
    finally:
        stop_group(shell.pid)
    wait_until(lambda: not answers(f"http://{address}/healthz"), timeout=10, what="port freed")


def check_start(output: str, context: str) -> None:
    assert json_documents(output) == [{"status": "ok"}], context


def check_first_steps(output: str, context: str) -> None:
    """Decision permit; amend to version 2; revoke to version 3; the history and the events."""
    documents = json_documents(output)
    assert len(documents) == 5, context
    decision, amended, revoked, history, events = documents
    assert isinstance(decision, dict) and decision["decision"] == "permit", context
    assert decision["reason"] == "permitted-by-consent", context
    assert isinstance(amended, dict) and amended["version"] == 2, context
    assert amended["categories"] == ["radiographs"], context
    assert isinstance(revoked, dict) and revoked["version"] == 3, context
    assert revoked["status"] == "revoked", context
    assert isinstance(history, list), context
    assert [v["change"] for v in history] == ["granted", "amended", "revoked"], context
    assert isinstance(events, dict), context
    assert [e["type"] for e in events["items"]] == [
        "consent.granted",
        "consent.amended",
        "consent.revoked",
    ], context


def check_consent_request(output: str, address: str, context: str) -> None:
    documents = json_documents(output)
    assert len(documents) == 1 and isinstance(documents[0], dict), context
    request = documents[0]
    assert request["status"] == "pending", context
    assert request["form_url"].startswith(f"http://{address}/"), context
    assert answers(request["form_url"]), "the form link should open" + context
