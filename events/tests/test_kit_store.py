"""Applying events to the store, and the view's answers and refusals."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kit_helpers import PATIENT, PRACTITIONER, event, new_id, snapshot

from consent_events import ConsentView, IncompleteHistoryError, StaleViewError, Store
from consent_events.envelope import InvalidEvent
from consent_events.store import APPLIED, DUPLICATE, HELD, REJECTED, STALE, Rejection

AT = datetime(2025, 4, 1, tzinfo=UTC)


def _fresh_view(store: str | Store = ":memory:") -> ConsentView:
    view = ConsentView(store)
    view.store.heartbeat(lag_events=0, current_as_of=time.time())
    return view


def _ask(view: ConsentView, category: str = "radiographs", at: datetime = AT):
    return view.is_permitted(PATIENT, PRACTITIONER, category, "care-coordination", at=at)


def test_grant_amend_revoke_are_reflected_in_order() -> None:
    view = _fresh_view()
    consent = new_id()
    view.store.apply([event(snapshot(consent, 1))])
    assert (_ask(view).decision, _ask(view).version) == ("permit", 1)
    view.store.apply([event(snapshot(consent, 2, categories=["billing"]))])
    assert _ask(view).reason == "no-consent"
    assert (_ask(view, "billing").decision, _ask(view, "billing").version) == ("permit", 2)
    view.store.apply([event(snapshot(consent, 3, change="revoked", categories=["billing"]))])
    assert _ask(view, "billing").decision == "deny"
    # The past is still answered by the version then in force.
    assert _ask(view, at=datetime(2025, 3, 1, 9, 0, 1, 500000, tzinfo=UTC)).version == 1


def test_duplicates_and_stale_versions_change_nothing() -> None:
    store = Store()
    consent = new_id()
    granted = event(snapshot(consent, 1), "e-1")
    amended = event(snapshot(consent, 2, categories=["billing"]), "e-2")
    assert [c.outcome for c in store.apply([granted, amended])] == [APPLIED, APPLIED]
    before = store.counts()
    again = [granted, amended, event(snapshot(consent, 1), "e-other")]
    assert [c.outcome for c in store.apply(again)] == [DUPLICATE, DUPLICATE, STALE]
    assert store.counts() == before
    assert store.version_of(consent) == 2


def test_a_version_gap_is_held_reported_and_released_when_filled() -> None:
    view = _fresh_view()
    consent = new_id()
    view.store.apply([event(snapshot(consent, 1))])
    revoked = event(snapshot(consent, 3, change="revoked"))
    assert [(c.outcome, c.reason) for c in view.store.apply([revoked])] == [(HELD, "missing 2")]
    assert view.store.version_of(consent) == 1
    assert [(g.consent_id, g.stored_version, g.held_versions) for g in view.store.gaps()] == [
        (consent, 1, (3,))
    ]
    # Version 1 still permits, but the pair's history is known to be incomplete: fail closed.
    with pytest.raises(IncompleteHistoryError, match=consent):
        _ask(view)
    changes = view.store.apply([event(snapshot(consent, 2, categories=["radiographs"]))])
    assert [(c.outcome, c.version) for c in changes] == [(APPLIED, 2), (APPLIED, 3)]
    assert view.store.gaps() == []
    assert _ask(view).reason == "no-consent"


def test_a_first_event_after_version_one_is_a_gap_too() -> None:
    store = Store()
    consent = new_id()
    assert store.apply([event(snapshot(consent, 2))])[0].outcome == HELD
    assert store.version_of(consent) is None


def test_a_rejected_event_of_a_known_consent_makes_its_pair_unanswerable() -> None:
    view = _fresh_view()
    consent = new_id()
    view.store.apply([event(snapshot(consent, 1))])
    error = InvalidEvent("data does not match", event_id="e-bad", consent_id=consent)
    changes = view.store.apply([Rejection(error, "consent.events/0@7")])
    assert changes[0].outcome == REJECTED
    assert view.store.rejected() == [("e-bad", consent, "consent.events/0@7", error.reason)]
    with pytest.raises(IncompleteHistoryError):
        _ask(view)
    other_pair = view.is_permitted("patient-0002", PRACTITIONER, "radiographs", "referral", at=AT)
    assert other_pair.reason == "no-consent"


def test_organization_filter_keeps_other_tenants_out() -> None:
    store = Store()
    store.heartbeat(lag_events=0, current_as_of=time.time())
    store.apply([event(snapshot(new_id(), organization="org-b"))])
    assert _ask(ConsentView(store)).decision == "permit"
    assert _ask(ConsentView(store, organization="org-a")).reason == "no-consent"


def test_view_refuses_when_never_caught_up() -> None:
    view = ConsentView(":memory:")
    view.store.apply([event(snapshot(new_id()))])
    with pytest.raises(StaleViewError, match="never caught up"):
        _ask(view)


def test_view_refuses_past_the_seconds_bound() -> None:
    view = ConsentView(":memory:", max_lag_seconds=5)
    view.store.apply([event(snapshot(new_id()))])
    view.store.heartbeat(lag_events=0, current_as_of=time.time() - 4)
    assert _ask(view).decision == "permit"
    view.store.heartbeat(lag_events=0, current_as_of=time.time() - 6)
    with pytest.raises(StaleViewError, match=r"6\.\d s behind .*bound 5 s"):
        _ask(view)
    assert 6 <= view.lag().seconds < 7


def test_view_refuses_past_the_events_bound() -> None:
    view = ConsentView(":memory:", max_lag_events=10)
    view.store.heartbeat(lag_events=11, current_as_of=time.time())
    with pytest.raises(StaleViewError, match="11 events behind"):
        _ask(view)
    assert view.lag().events == 11


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _ask(_fresh_view(), at=datetime(2025, 4, 1))


def _write_in_another_process(path: str, consent: str) -> None:
    store = Store(path)
    store.apply([event(snapshot(consent, 1))], lag_events=0, current_as_of=time.time())
    store.close()


def test_a_file_store_is_durable_and_readable_from_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "view.db")
    consent = new_id()
    process = multiprocessing.get_context("spawn").Process(
        target=_write_in_another_process, args=(path, consent)
    )
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0
    view = ConsentView(path)
    assert (_ask(view).decision, _ask(view).consent_id) == ("permit", consent)
