"""`consent-service serve` starts cleanly on a fresh directory, every time.

Workers used to create the rate-limit counter table at boot and two of
them could race ("table rate_limit_counters already exists"), after which
the master gave up ("Worker failed to boot"). Everything a worker needs now
exists before the workers fork; these starts prove it, repeatedly.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.test_gunicorn import CLI, free_port, service_env

STARTS = 20
WORKERS = 4
BOOT_DEADLINE = 90.0


def healthz(port: int) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def start_once(directory: Path) -> None:
    directory.mkdir()
    # Rate limits on, in the database: the storage whose table used to race.
    env = service_env(directory, CONSENT_RATE_LIMITS="default")
    env.pop("CONSENT_WEB_CONCURRENCY")
    port = free_port()
    log = directory / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)],
            env=env,
            cwd=directory,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + BOOT_DEADLINE
        # Every worker logs "serving" once it has loaded the app; a worker
        # that fails to boot makes the master exit instead.
        while log.read_text().count("serving: requests must arrive") < WORKERS:
            assert process.poll() is None, f"master exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"workers did not boot:\n{log.read_text()}"
            time.sleep(0.05)
        assert healthz(port) == 200, log.read_text()
        assert process.poll() is None, f"master exited:\n{log.read_text()}"
        assert "Worker failed to boot" not in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(STARTS * 60)
def test_serve_with_four_workers_starts_cleanly_on_a_fresh_directory_every_time(
    tmp_path: Path,
) -> None:
    for attempt in range(STARTS):
        start_once(tmp_path / f"start-{attempt}")
