"""consent-events: enforce patients' consents locally from consent-service's event stream.

``Subscriber`` (or ``consent-events listen``) keeps a local store current;
``ConsentView(path).is_permitted(...)`` answers from it, in any process, with
the service's own decision rule, and refuses to answer when it has fallen
behind.
"""

from consent_events.envelope import Event, InvalidEvent
from consent_events.feed import Feed, FeedError
from consent_events.rules import Decision
from consent_events.store import Store
from consent_events.subscriber import Subscriber
from consent_events.view import (
    ConsentView,
    ConsentViewUnavailable,
    IncompleteHistoryError,
    Lag,
    StaleViewError,
)

__all__ = [
    "ConsentView",
    "ConsentViewUnavailable",
    "Decision",
    "Event",
    "Feed",
    "FeedError",
    "IncompleteHistoryError",
    "InvalidEvent",
    "Lag",
    "StaleViewError",
    "Store",
    "Subscriber",
]
