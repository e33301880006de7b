"""The ``consent-events`` command: ``listen`` keeps a store current, ``check`` asks it.

Exit codes of ``check``: 0 permit, 1 deny, 3 the view cannot answer (stale or
incomplete: treat as deny), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from types import FrameType
from typing import Any

from consent_events.acks import AckSender, queue_current_versions
from consent_events.feed import Feed
from consent_events.store import Store
from consent_events.subscriber import DEFAULT_FETCH_MAX_WAIT_MS, DEFAULT_TOPIC, Subscriber
from consent_events.view import ConsentView, ConsentViewUnavailable

EXIT_PERMIT, EXIT_DENY, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return int(args.handler(parser, args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-events", description="Enforce consents locally from the event stream."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    listen = commands.add_parser("listen", help="follow the topic into a store, until stopped")
    listen.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port]")
    listen.add_argument("--group", required=True, help="consumer group id (resume point)")
    listen.add_argument("--store", required=True, help="SQLite file of the local view")
    listen.add_argument(
        "--topic",
        action="append",
        help=f"topic to follow, repeatable (default {DEFAULT_TOPIC}; per-organization mode:"
        f" {DEFAULT_TOPIC}.ORGANIZATION)",
    )
    listen.add_argument(
        "--organization", help="apply only this organization's events (needed with --feed-url)"
    )
    listen.add_argument(
        "--assign",
        action="store_true",
        help="take every partition directly instead of joining the group (one subscriber only)",
    )
    listen.add_argument(
        "--feed-url",
        help="service base URL: a fresh group first catches up from GET /v1/events"
        " (API key in CONSENT_EVENTS_API_KEY, scope events:read)",
    )
    listen.add_argument(
        "--ack-url",
        help="service base URL: acknowledge each applied change to POST /v1/subscribers/acks"
        " (API key in --ack-key or CONSENT_EVENTS_ACK_KEY, scope events:ack)",
    )
    listen.add_argument("--ack-key", help="API key for --ack-url (prefer CONSENT_EVENTS_ACK_KEY)")
    listen.add_argument("--fetch-max-wait-ms", type=int, default=DEFAULT_FETCH_MAX_WAIT_MS)
    listen.add_argument(
        "-X",
        dest="consumer_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra kafka-python consumer setting, e.g. -X security_protocol=SASL_SSL",
    )
    listen.add_argument("--log-level", default="INFO")
    listen.set_defaults(handler=_listen)

    check = commands.add_parser("check", help="answer one question from a store")
    check.add_argument("--store", required=True)
    check.add_argument("patient_id")
    check.add_argument("practitioner_id")
    check.add_argument("category")
    check.add_argument("purpose")
    check.add_argument("--at", type=_instant, help="ISO 8601 instant with offset (default now)")
    check.add_argument("--organization")
    check.add_argument("--max-lag-seconds", type=float, default=30.0)
    check.set_defaults(handler=_check)

    status = commands.add_parser("status", help="print lag, gaps and rejected events as JSON")
    status.add_argument("--store", required=True)
    status.set_defaults(handler=_status)
    return parser


def _listen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    feed = None
    if args.feed_url:
        api_key = os.environ.get("CONSENT_EVENTS_API_KEY")
        if not api_key or not args.organization:
            parser.error("--feed-url needs --organization and CONSENT_EVENTS_API_KEY")
        feed = Feed(args.feed_url, api_key)
    store = Store(args.store, queue_acks=bool(args.ack_url))
    sender = _ack_sender(parser, args, store)
    subscriber = Subscriber(
        store,
        bootstrap_servers=args.bootstrap_servers.split(","),
        group_id=args.group,
        topics=args.topic or [DEFAULT_TOPIC],
        manual_assignment=args.assign,
        organization=args.organization,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        consumer_config=_consumer_config(parser, args.consumer_config),
        on_change=None if sender is None else lambda change: sender.notify(),
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if sender is not None:
            sender.start()
        subscriber.start(feed, metadata_timeout=None)
        subscriber.run(stop)
    finally:
        subscriber.close()
        if sender is not None:
            # Acks not sent by then stay queued in the store for the next start.
            sender.stop()
    return 0


def _ack_sender(
    parser: argparse.ArgumentParser, args: argparse.Namespace, store: Store
) -> AckSender | None:
    if not args.ack_url:
        return None
    key = args.ack_key or os.environ.get("CONSENT_EVENTS_ACK_KEY")
    if not key:
        parser.error("--ack-url needs --ack-key or CONSENT_EVENTS_ACK_KEY")
    queued = queue_current_versions(store, time.time())
    if queued:
        logging.getLogger(__name__).info("queued acks of %d consents applied earlier", queued)
    return AckSender(store, args.ack_url, key)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _existing_store(parser, args.store)
    view = ConsentView(
        args.store, max_lag_seconds=args.max_lag_seconds, organization=args.organization
    )
    try:
        answer = view.is_permitted(
            args.patient_id, args.practitioner_id, args.category, args.purpose, at=args.at
        )
    except ConsentViewUnavailable as error:
        print(json.dumps({"decision": "unavailable", "error": str(error)}))
        return EXIT_UNAVAILABLE
    finally:
        view.close()
    shown = {
        "decision": answer.decision,
        "consent_id": answer.consent_id,
        "version": answer.version,
        "reason": answer.reason,
    }
    if answer.emergency_access_id is not None:
        shown["emergency_access_id"] = answer.emergency_access_id
    print(json.dumps(shown))
    return EXIT_PERMIT if answer.permitted else EXIT_DENY


def _status(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _existing_store(parser, args.store)
    view = ConsentView(args.store)
    try:
        lag = view.lag()
        report = {
            "lag_events": lag.events,
            "lag_seconds": lag.seconds,
            "heartbeat_age_seconds": lag.heartbeat_age,
            **view.store.counts(),
            "gaps": [
                {"consent_id": g.consent_id, "stored": g.stored_version, "held": g.held_versions}
                for g in view.store.gaps()
            ],
            "rejected": [
                {"event_id": e, "consent_id": c, "origin": o, "reason": r}
                for e, c, o, r in view.store.rejected()
            ],
        }
    finally:
        view.close()
    print(json.dumps(report, indent=2))
    return 0


def _existing_store(parser: argparse.ArgumentParser, path: str) -> None:
    """Reading commands never create a store: a mistyped path is an error, not an empty view."""
    if not os.path.exists(path):
        parser.error(f"no store at {path} (start `consent-events listen --store {path}`)")


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError("the instant needs an offset, e.g. 2025-03-01T09:00:00Z")
    return instant


def _consumer_config(parser: argparse.ArgumentParser, pairs: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"-X expects KEY=VALUE, got {pair!r}")
        config[key] = int(value) if value.isdigit() else value
    return config


if __name__ == "__main__":
    sys.exit(main())
