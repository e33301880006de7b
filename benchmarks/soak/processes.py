"""Starting, killing and measuring the processes of a soak: API instances, relays, subscribers.

Everything is driven through the command line, as an operator would: ``consent-service
serve`` (which execs gunicorn, so the process we start is the master and its
children are the workers), ``consent-service relay`` and ``consent-events listen``.
Each process gets its own session (process group), so that killing a whole
instance takes its workers with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BIN = Path(sys.executable).parent
CLI = str(BIN / "consent-service")
EVENTS_CLI = str(BIN / "consent-events")
LOOPBACK = "127.0.0.1"
ORGANIZATION = "org-soak"
SCOPES = "consents:read,consents:write,decisions:read,events:read"


def create_database(base_url: str, name: str) -> str:
    """A fresh database ``name`` on the server of ``base_url``; its URL."""
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def drop_database(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def through_port(url: str, port: int) -> str:
    """``url`` reaching its server on the loopback ``port`` (a proxy) instead."""
    return make_url(url).set(host=LOOPBACK, port=port).render_as_string(hide_password=False)


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def prepare_service(env: dict[str, str]) -> str:
    """Migrate the database and create the load's API client; its key."""
    migrated = run_cli(env, "db", "upgrade")
    if migrated.returncode != 0:
        raise RuntimeError(f"db upgrade failed: {migrated.stderr[-2000:]}")
    created = run_cli(env, "clients", "create", "--org", ORGANIZATION, "--scopes", SCOPES, "--json")
    if created.returncode != 0:
        raise RuntimeError(f"clients create failed: {created.stderr[-2000:]}")
    return str(json.loads(created.stdout)["api_key"])


@dataclass
class Managed:
    """One long-running command, restartable, its output in ``log``."""

    name: str
    kind: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: the process and its children, no goodbye."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self.start()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def children(self) -> list[int]:
        if not self.alive():
            return []
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def rss_kib(self) -> int:
        """Resident memory of the process and its children."""
        if not self.alive():
            return 0
        return sum(rss_kib_of(pid) for pid in [self.pid, *self.children()])


def rss_kib_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


@dataclass
class ApiInstance(Managed):
    port: int = 0
    workers: int = 2

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        """``/readyz`` answers 200: the instance serves and reaches its database."""
        return http_status(self.base_url + "/readyz") == 200

    def workers_up(self) -> bool:
        return len(self.children()) >= self.workers


@dataclass
class RelayProcess(Managed):
    metrics_port: int = 0

    def active(self) -> bool:
        """This relay holds the PostgreSQL advisory lock (its ``consent_relay_active`` is 1)."""
        if not self.alive():
            return False
        try:
            with urllib.request.urlopen(
                f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=2
            ) as response:
                body = response.read().decode()
        except OSError:
            return False
        found = re.search(r"^consent_relay_active (\S+)$", body, re.MULTILINE)
        return bool(found) and float(found.group(1)) == 1.0


@dataclass
class SubscriberProcess(Managed):
    store: Path = field(default_factory=Path)


def http_status(url: str, timeout: float = 2) -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``check()`` until true; the seconds it took. ``TimeoutError`` naming ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started
