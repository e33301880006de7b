"""The consent-events command, run as practice software would run it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from kit_helpers import PATIENT, PRACTITIONER, event, new_id, snapshot
from tests.support.waiting import wait_until

from consent_events import ConsentView, ConsentViewUnavailable, Store

CLI = [sys.executable, "-m", "consent_events.cli"]
QUESTION = [PATIENT, PRACTITIONER, "radiographs", "care-coordination"]


def _check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "check", "--store", str(path), *QUESTION, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _store_with_one_consent(path: Path, current: bool = True) -> str:
    consent = new_id()
    store = Store(str(path))
    store.apply(
        [event(snapshot(consent, valid_until="2025-06-01T00:00:00.000000Z"))],
        lag_events=0,
        current_as_of=time.time() if current else None,
    )
    store.close()
    return consent


def test_check_answers_permit_and_deny_with_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    consent = _store_with_one_consent(path)
    permitted = _check(path, "--at", "2025-04-01T00:00:00Z")
    assert permitted.returncode == 0, permitted.stderr
    assert json.loads(permitted.stdout) == {
        "decision": "permit",
        "consent_id": consent,
        "version": 1,
        "reason": "permitted-by-consent",
    }
    denied = _check(path, "--at", "2025-06-01T00:00:00+00:00")
    assert (denied.returncode, json.loads(denied.stdout)["reason"]) == (1, "no-consent")


def test_check_refuses_from_a_store_that_never_caught_up(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    _store_with_one_consent(path, current=False)
    answer = _check(path)
    assert answer.returncode == 3
    assert json.loads(answer.stdout)["decision"] == "unavailable"


def test_check_rejects_an_instant_without_offset(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    _store_with_one_consent(path)
    answer = _check(path, "--at", "2025-04-01T00:00:00")
    assert answer.returncode == 2
    assert "needs an offset" in answer.stderr


def test_check_never_creates_a_store(tmp_path: Path) -> None:
    answer = _check(tmp_path / "mistyped.db")
    assert (answer.returncode, "no store at" in answer.stderr) == (2, True)
    assert not (tmp_path / "mistyped.db").exists()


def test_status_reports_lag_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    _store_with_one_consent(path)
    status = subprocess.run(
        [*CLI, "status", "--store", str(path)], capture_output=True, text=True, check=True
    )
    report = json.loads(status.stdout)
    assert (report["consents"], report["lag_events"], report["gaps"]) == (1, 0, [])


def _wait_for(view: ConsentView, decision: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if view.is_permitted(*QUESTION).decision == decision:
                return
        except ConsentViewUnavailable:
            pass
        assert time.monotonic() < deadline, f"never answered {decision}"
        time.sleep(0.05)


def test_listen_keeps_a_store_current_and_stops_cleanly(broker, topic, publish, tmp_path) -> None:
    path = tmp_path / "view.db"
    consent = new_id()
    publish(snapshot(consent, 1))
    listener = subprocess.Popen(
        [
            *CLI,
            "listen",
            "--bootstrap-servers",
            broker,
            "--group",
            "g-cli",
            "--store",
            str(path),
            "--topic",
            topic,
            "--assign",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(path.exists, 20, "the listener to create its store")
        view = ConsentView(str(path))
        _wait_for(view, "permit")
        publish(snapshot(consent, 2, change="revoked"))
        _wait_for(view, "deny")
    finally:
        listener.send_signal(signal.SIGTERM)
        _, logs = listener.communicate(timeout=20)
    assert listener.returncode == 0, logs
    assert f"applied consent={consent} version=1 change=granted" in logs
    assert f"applied consent={consent} version=2 change=revoked" in logs
    assert PATIENT not in logs  # ids of consents only, never the patient's reference
