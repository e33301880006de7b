"""Answering "may this practitioner see this?" from the local store, or refusing to.

The view fails closed: an answer from a store that has fallen behind could
still permit what the patient has revoked, so :meth:`ConsentView.is_permitted`
raises :class:`StaleViewError` past the configured lag bound, and
:class:`IncompleteHistoryError` while a consent of the pair is missing a
version. Both derive from :class:`ConsentViewUnavailable`; treat it as deny.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from consent_events.emergency import EMERGENCY_ACCESS_REASON
from consent_events.rules import Decision, decide
from consent_events.store import Store


class ConsentViewUnavailable(RuntimeError):
    """The view cannot be trusted to answer right now; the caller must treat this as deny."""


class StaleViewError(ConsentViewUnavailable):
    """The store is further behind the event stream than the configured bound."""


class IncompleteHistoryError(ConsentViewUnavailable):
    """A consent of the pair has a missing version or a rejected event."""


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the store is behind: backlog in events and staleness in seconds.

    ``seconds`` is ``None`` when no subscriber has ever caught up with the
    stream into this store.
    """

    events: int
    seconds: float | None
    heartbeat_age: float | None


class ConsentView:
    """The local view of consents kept current by a subscriber, read from any process.

    ``max_lag_seconds`` bounds how stale an answer may be (default 30 s);
    ``max_lag_events`` bounds the known backlog (default 1000). ``None``
    disables a bound, which only makes sense for offline analysis.
    ``organization`` restricts answers to one organization's consents when
    several share a topic, as the service's own decisions are.
    """

    def __init__(
        self,
        store: str | Store = ":memory:",
        *,
        max_lag_seconds: float | None = 30.0,
        max_lag_events: int | None = 1000,
        organization: str | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        self.max_lag_seconds = max_lag_seconds
        self.max_lag_events = max_lag_events
        self.organization = organization

    def is_permitted(
        self,
        patient_id: str,
        practitioner_id: str,
        category: str,
        purpose: str,
        at: datetime | None = None,
    ) -> Decision:
        """The service's decision for this question, from the local store.

        ``at`` must be timezone-aware; it defaults to now. Raises
        :class:`ConsentViewUnavailable` rather than answer from a store that
        may be missing changes.
        """
        if at is None:
            at = datetime.now(UTC)
        elif at.tzinfo is None:
            raise ValueError("at must be timezone-aware (for example datetime.now(UTC))")
        histories, suspect, state = self.store.snapshot(
            patient_id, practitioner_id, self.organization
        )
        self._check_lag(_lag(state.current_as_of, state.lag_events, state.heartbeat_at))
        # An open emergency access permits whatever the consents say (as the service answers).
        access_id = self.store.emergency_access(patient_id, practitioner_id, self.organization, at)
        if access_id is not None:
            return Decision("permit", None, None, EMERGENCY_ACCESS_REASON, access_id)
        if suspect:
            raise IncompleteHistoryError(
                f"consent {suspect[0]} has a missing version or a rejected event;"
                " see `consent-events status` (treat as deny)"
            )
        return decide(histories, category, purpose, at)

    def lag(self) -> Lag:
        """How far behind the store is, as last reported by its subscriber."""
        state = self.store.state()
        return _lag(state.current_as_of, state.lag_events, state.heartbeat_at)

    def close(self) -> None:
        self.store.close()

    def _check_lag(self, lag: Lag) -> None:
        if self.max_lag_seconds is not None:
            if lag.seconds is None:
                raise StaleViewError(
                    "the consent store has never caught up with the event stream"
                    " (is `consent-events listen` running?); treat as deny"
                )
            if lag.seconds > self.max_lag_seconds:
                raise StaleViewError(
                    f"the consent store is {lag.seconds:.1f} s behind the event stream"
                    f" (bound {self.max_lag_seconds:g} s); treat as deny"
                )
        if self.max_lag_events is not None and lag.events > self.max_lag_events:
            raise StaleViewError(
                f"the consent store is {lag.events} events behind the event stream"
                f" (bound {self.max_lag_events}); treat as deny"
            )


def _lag(current_as_of: float | None, events: int, heartbeat_at: float | None) -> Lag:
    now = time.time()
    return Lag(
        events=events,
        seconds=None if current_as_of is None else max(0.0, now - current_as_of),
        heartbeat_age=None if heartbeat_at is None else max(0.0, now - heartbeat_at),
    )
