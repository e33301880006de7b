"""The faults of a soak, each measured from its start until the system has recovered.

A fault's window runs from its start to its recovery (plus a short grace for
requests already in flight); 5xx answers and failed connections inside a
window are expected, outside every window they fail the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from soak.processes import LOOPBACK, ApiInstance, RelayProcess, wait_until

# After a fault has recovered, requests that were already waiting may still fail.
GRACE_S = 2.0
RECOVERY_TIMEOUT_S = 120.0
DATABASE_CUT_S = 5.0
BROKER_CUT_S = 8.0
SLOW_CLIENT_S = 10.0
SLOW_CLIENTS_PER_INSTANCE = 40


@dataclass
class Fault:
    kind: str
    at_s: float
    recovered_after_s: float | None = None
    detail: str = ""

    def window(self) -> tuple[float, float]:
        length = self.recovered_after_s if self.recovered_after_s is not None else 1e9
        return self.at_s, self.at_s + length + GRACE_S

    def as_json(self) -> dict[str, Any]:
        recovered = None if self.recovered_after_s is None else round(self.recovered_after_s, 2)
        return {
            "kind": self.kind,
            "at_s": round(self.at_s, 1),
            "recovered_after_s": recovered,
            "detail": self.detail,
        }


@dataclass
class Cluster:
    """What the faults act on (built by ``soak.py``)."""

    apis: list[ApiInstance]
    relays: list[RelayProcess]
    database_proxy: Any
    broker_proxy: Any | None
    backlog: Callable[[float | None], int]


def active_relay(relays: Sequence[RelayProcess]) -> RelayProcess | None:
    active = [relay for relay in relays if relay.active()]
    return active[0] if len(active) == 1 else None


def kill_active_relay(cluster: Cluster) -> str:
    wait_until(
        lambda: active_relay(cluster.relays) is not None, RECOVERY_TIMEOUT_S, "one active relay"
    )
    victim = active_relay(cluster.relays)
    assert victim is not None
    victim.kill()
    wait_until(
        lambda: any(relay.active() for relay in cluster.relays if relay is not victim),
        RECOVERY_TIMEOUT_S,
        "a standby relay taking over",
    )
    taker = active_relay([relay for relay in cluster.relays if relay is not victim])
    # Back to three relays: the killed one comes back as a standby.
    victim.start()
    return f"killed {victim.name}, {taker.name if taker else '?'} took over"


def kill_api_worker(cluster: Cluster) -> str:
    instance = cluster.apis[0]
    before = instance.children()
    if not before:
        raise RuntimeError(f"{instance.name} has no workers")
    os.kill(before[0], signal.SIGKILL)
    wait_until(
        lambda: before[0] not in instance.children() and instance.workers_up() and instance.ready(),
        RECOVERY_TIMEOUT_S,
        "gunicorn replacing the worker",
    )
    return f"SIGKILL worker {before[0]} of {instance.name}"


def kill_api_instance(cluster: Cluster) -> str:
    instance = cluster.apis[-1]
    instance.kill()
    instance.start()
    wait_until(instance.ready, RECOVERY_TIMEOUT_S, f"{instance.name} restarted", interval=0.05)
    return f"SIGKILL of {instance.name} (master and workers), restarted"


def cut_database(cluster: Cluster) -> str:
    cluster.database_proxy.cut()
    time.sleep(DATABASE_CUT_S)  # The fault's length is the point here, not a synchronisation.
    cluster.database_proxy.restore()
    wait_until(
        lambda: all(instance.ready() for instance in cluster.apis),
        RECOVERY_TIMEOUT_S,
        "every API instance ready again",
        interval=0.05,
    )
    return f"API instances cut from PostgreSQL for {DATABASE_CUT_S:.0f} s"


def cut_broker(cluster: Cluster) -> str:
    """The broker unreachable for everyone (producer, subscribers) for a while.

    The bundled Tansu keeps its log in memory only (this build has neither its
    PostgreSQL nor its SQLite storage), so a real process restart would empty
    the topic; its network going away is the fault we can inflict without
    losing what the oracle must find.
    """
    cluster.broker_proxy.cut()
    time.sleep(BROKER_CUT_S)  # The outage's length, not a synchronisation.
    restored = time.time()
    cluster.broker_proxy.restore()
    wait_until(
        lambda: cluster.backlog(restored) == 0, RECOVERY_TIMEOUT_S, "the outbox backlog drained"
    )
    return f"broker unreachable for {BROKER_CUT_S:.0f} s; backlog drained"


def slow_clients(cluster: Cluster) -> str:
    """Sockets that trickle header bytes, a few per second, on every instance."""
    sockets: list[socket.socket] = []
    for instance in cluster.apis:
        for _ in range(SLOW_CLIENTS_PER_INSTANCE):
            try:
                sock = socket.create_connection((LOOPBACK, instance.port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: soak\r\n")
                sockets.append(sock)
            except OSError:
                break
    deadline = time.monotonic() + SLOW_CLIENT_S
    while time.monotonic() < deadline:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: a\r\n")
        time.sleep(0.5)  # The trickle's pace: this is the fault itself.
    for sock in sockets:
        sock.close()
    wait_until(
        lambda: all(instance.ready() for instance in cluster.apis),
        RECOVERY_TIMEOUT_S,
        "instances answering",
    )
    return f"{len(sockets)} slow sockets for {SLOW_CLIENT_S:.0f} s"


FAULTS: dict[str, Callable[[Cluster], str]] = {
    "kill_active_relay": kill_active_relay,
    "kill_api_worker": kill_api_worker,
    "kill_api_instance": kill_api_instance,
    "database_cut": cut_database,
    "broker_outage": cut_broker,
    "slow_clients": slow_clients,
}


class Schedule:
    """Runs the faults one after another, evenly spread over the loaded period."""

    def __init__(
        self,
        cluster: Cluster,
        kinds: Sequence[str],
        *,
        start_s: float,
        end_s: float,
        clock_zero: float,
    ) -> None:
        self.cluster = cluster
        self.kinds = list(kinds)
        step = (end_s - start_s) / max(1, len(self.kinds))
        self.times = [start_s + step * n for n in range(len(self.kinds))]
        self.clock_zero = clock_zero
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Run the faults not yet started right away, and wait for every one to recover."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        for kind, at in zip(self.kinds, self.times, strict=True):
            # Late faults (a slow recovery before them) start at once.
            self._stop.wait(max(0.0, at - (time.monotonic() - self.clock_zero)))
            fault = Fault(kind, time.monotonic() - self.clock_zero)
            self.faults.append(fault)
            try:
                fault.detail = FAULTS[kind](self.cluster)
                fault.recovered_after_s = time.monotonic() - self.clock_zero - fault.at_s
            except Exception as error:  # noqa: BLE001 - a fault that does not recover is a finding
                fault.detail = f"did not recover: {error}"
                self.errors.append(f"{kind}: {error}")
