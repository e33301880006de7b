"""Access token checks: what is accepted, every way a token is refused, key rotation and outages.

Keys are generated here; the issuer's key set is served by a real HTTP
server on 127.0.0.1 (``issuer.KeyServer``), which each test stops.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest

from consent_service.config import OidcSettings
from consent_service.identity.jwks import SigningKeys
from consent_service.identity.tokens import caller_id, check_token
from tests.identity.issuer import (
    AUDIENCE,
    KeyServer,
    b64,
    claims,
    make_key,
    sign,
    unsigned,
)


class Clock:
    """A monotonic clock the test moves by hand (the key set's lifetime is minutes)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[KeyServer]:
    key_server = KeyServer()
    key_server.keys = [make_key("k1")]
    with key_server.running():
        yield key_server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(server: KeyServer) -> OidcSettings:
    return OidcSettings(issuer=server.url, audience=AUDIENCE, jwks_url=server.jwks_url)


@pytest.fixture
def keys(server: KeyServer, clock: Clock) -> SigningKeys:
    return SigningKeys(
        issuer=server.url, jwks_url=server.jwks_url, max_age=300, refetch_interval=10, clock=clock
    )


def test_a_valid_token_gives_its_organization_scopes_and_subject(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys
) -> None:
    token = sign(server.keys[0], claims(server.url, scope="consents:read made-up:scope"))
    caller = check_token(token, settings, keys).principal
    assert caller is not None
    assert caller.organization == "practice-a"
    assert caller.scopes == frozenset({"consents:read"})
    assert caller.token_subject == "partner-app"
    assert caller.actor == "token:partner-app"
    assert caller.client_id == caller_id(server.url, "partner-app")
    assert len(caller.client_id) == 36
    assert caller.practitioner_id is None


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256"])
def test_each_allowed_algorithm_is_accepted(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, algorithm: str
) -> None:
    server.keys = [make_key(f"key-{algorithm}", algorithm)]
    token = sign(server.keys[0], claims(server.url), algorithm)
    assert check_token(token, settings, keys).failure is None


@pytest.mark.parametrize("number", ["10003456789", "810003456789"])
def test_a_practitioner_token_acts_as_that_practitioner(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, number: str
) -> None:
    # Alone, or as the national professional id ("8" + RPPS) Pro Santé Connect sends.
    token = sign(server.keys[0], claims(server.url, sub="dr-x", rpps=number))
    caller = check_token(token, settings, keys).principal
    assert caller is not None
    assert caller.practitioner_id == "rpps:10003456789"


def test_the_claims_to_read_are_configurable(server: KeyServer, keys: SigningKeys) -> None:
    settings = OidcSettings(
        issuer=server.url,
        audience=AUDIENCE,
        jwks_url=server.jwks_url,
        org_claim="https://example.org/structure",
        practitioner_claim="SubjectRefPro",
    )
    payload = claims(
        server.url, org=None, SubjectRefPro="10003456789", **{settings.org_claim: "cabinet-b"}
    )
    caller = check_token(sign(server.keys[0], payload), settings, keys).principal
    assert caller is not None
    assert (caller.organization, caller.practitioner_id) == ("cabinet-b", "rpps:10003456789")


def test_clock_skew_of_a_minute_is_tolerated(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys
) -> None:
    now = int(time.time())
    late = sign(server.keys[0], claims(server.url, exp=now - 30))
    early = sign(server.keys[0], claims(server.url, nbf=now + 30))
    assert check_token(late, settings, keys).failure is None
    assert check_token(early, settings, keys).failure is None


REFUSALS = {
    "expired": ({"exp": -120}, "token:expired"),
    "not yet valid": ({"nbf": 120}, "token:invalid-nbf"),
    "wrong audience": ({"aud": "https://other.example"}, "token:invalid-aud"),
    "wrong issuer": ({"iss": "https://evil.example"}, "token:invalid-iss"),
    "no subject": ({"sub": None}, "token:missing-claim"),
    "no organization": ({"org": None}, "token:missing-claim"),
    "no expiry": ({"exp": None}, "token:missing-claim"),
    "no audience": ({"aud": None}, "token:missing-claim"),
    "no issuer": ({"iss": None}, "token:missing-claim"),
    "organization not an id": ({"org": "a b/../c"}, "token:invalid-organization"),
    "practitioner not an RPPS": ({"rpps": "rpps:1"}, "token:invalid-practitioner"),
    "practitioner a number": ({"rpps": 10003456789}, "token:invalid-practitioner"),
    "practitioner 12 digits": ({"rpps": "910003456789"}, "token:invalid-practitioner"),
    "subject too long": ({"sub": "s" * 151}, "token:invalid-sub"),
    "scope not a string": ({"scope": ["consents:read"]}, "token:invalid-scope"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_bad_claims_are_refused(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, case: str
) -> None:
    changes, reason = REFUSALS[case]
    now = int(time.time())
    relative = {"exp", "nbf"}
    overrides = {
        name: (now + value if name in relative and value is not None else value)
        for name, value in changes.items()
    }
    token = sign(server.keys[0], claims(server.url, **overrides))
    assert check_token(token, settings, keys) == check_token(token, settings, keys)
    assert check_token(token, settings, keys).failure == reason


def test_alg_none_is_refused(server: KeyServer, settings: OidcSettings, keys: SigningKeys) -> None:
    token = unsigned({"alg": "none", "kid": "k1"}, claims(server.url))
    assert check_token(token, settings, keys).failure == "token:algorithm"
    assert server.key_fetches() == 0


def test_hs256_signed_with_the_public_key_is_refused(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys
) -> None:
    # The classic confusion: a verifier that let the token pick HMAC would
    # check it with the (public) RSA key as the HMAC secret.
    public_pem = server.keys[0].as_pem(private=False)
    header = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    payload = b64(json.dumps(claims(server.url)).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert check_token(f"{header}.{payload}.{b64(mac)}", settings, keys).failure == (
        "token:algorithm"
    )


def test_a_tampered_payload_is_refused(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys
) -> None:
    head, _payload, signature = sign(server.keys[0], claims(server.url)).split(".")
    other = b64(json.dumps(claims(server.url, org="practice-b")).encode())
    assert check_token(f"{head}.{other}.{signature}", settings, keys).failure == (
        "token:bad-signature"
    )


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys
) -> None:
    impostor = make_key("k1")
    token = sign(impostor, claims(server.url))
    assert check_token(token, settings, keys).failure == "token:bad-signature"


@pytest.mark.parametrize(
    "token", ["a.b.c", "....", "x" * 9000, "eyJhbGciOiJSUzI1NiJ9.e30.", "é.é.é"]
)
def test_garbage_is_refused(settings: OidcSettings, keys: SigningKeys, token: str) -> None:
    assert check_token(token, settings, keys).failure in (
        "token:malformed",
        "token:oversized",
        "token:no-key-id",
    )


def test_an_unknown_kid_is_refused_and_refetches_at_a_limited_rate(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, clock: Clock
) -> None:
    stranger = make_key("k-unknown")
    token = sign(stranger, claims(server.url))
    assert check_token(sign(server.keys[0], claims(server.url)), settings, keys).failure is None
    assert server.key_fetches() == 1
    for _ in range(20):
        assert check_token(token, settings, keys).failure == "token:unknown-key"
    # The first unknown kid came less than refetch_interval after the first
    # fetch: none of the twenty made the worker ask the provider again.
    assert server.key_fetches() == 1
    clock.now += 10
    assert check_token(token, settings, keys).failure == "token:unknown-key"
    assert server.key_fetches() == 2


def test_key_rotation_new_kid_is_fetched_old_one_dropped(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, clock: Clock
) -> None:
    old = server.keys[0]
    assert check_token(sign(old, claims(server.url)), settings, keys).failure is None
    new = make_key("k2")
    server.keys = [new]
    clock.now += 10
    assert check_token(sign(new, claims(server.url)), settings, keys).failure is None
    assert server.key_fetches() == 2
    # The issuer no longer publishes the old key: its tokens stop.
    assert check_token(sign(old, claims(server.url)), settings, keys).failure == (
        "token:unknown-key"
    )


def test_an_outage_keeps_cached_keys_for_their_lifetime_and_fails_closed_after(
    server: KeyServer, settings: OidcSettings, keys: SigningKeys, clock: Clock
) -> None:
    token = sign(server.keys[0], claims(server.url))
    assert check_token(token, settings, keys).failure is None
    server.down = True
    clock.now += 299
    assert check_token(token, settings, keys).failure is None
    stranger = sign(make_key("k-new"), claims(server.url))
    assert check_token(stranger, settings, keys).failure == "token:unknown-key"
    clock.now += 1
    assert check_token(token, settings, keys).failure == "token:unknown-key"
    server.down = False
    clock.now += 10
    assert check_token(token, settings, keys).failure is None


def test_a_stopped_key_server_fails_closed(settings: OidcSettings, server: KeyServer) -> None:
    keys = SigningKeys(issuer=server.url, jwks_url=server.url + "/nowhere", max_age=300)
    token = sign(server.keys[0], claims(server.url))
    assert check_token(token, settings, keys).failure == "token:unknown-key"


def test_keys_are_found_through_discovery(server: KeyServer, settings: OidcSettings) -> None:
    keys = SigningKeys(issuer=server.url, jwks_url=None, max_age=300)
    token = sign(server.keys[0], claims(server.url))
    assert check_token(token, settings, keys).failure is None
    assert server.requests[0] == "/.well-known/openid-configuration"


def test_a_discovery_document_naming_another_issuer_gives_no_keys(
    server: KeyServer, settings: OidcSettings
) -> None:
    server.discovery_issuer = "https://evil.example"
    keys = SigningKeys(issuer=server.url, jwks_url=None, max_age=300)
    token = sign(server.keys[0], claims(server.url))
    assert check_token(token, settings, keys).failure == "token:unknown-key"
    assert server.key_fetches() == 0
