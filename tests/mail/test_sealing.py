"""Sealed addresses: open with any configured key, bound to their row, never readable."""

from __future__ import annotations

import pytest

from consent_service.mail.sealing import Sealer, SealError

ADDRESS = "marie.curie@example.org"


def test_sealed_addresses_open_only_for_their_row_and_hide_the_address() -> None:
    sealer = Sealer(["key-one"])
    sealed = sealer.seal(ADDRESS, bound_to="request-1")
    assert ADDRESS not in sealed and "marie" not in sealed
    assert sealer.open(sealed, bound_to="request-1") == ADDRESS
    with pytest.raises(SealError):
        sealer.open(sealed, bound_to="request-2")
    assert sealer.seal(ADDRESS, "request-1") != sealed  # a fresh nonce each time


def test_rotation_opens_old_seals_and_seals_with_the_newest_key() -> None:
    old = Sealer(["key-one"]).seal(ADDRESS, "r")
    rotated = Sealer(["key-two", "key-one"])
    assert rotated.open(old, "r") == ADDRESS
    new = rotated.seal(ADDRESS, "r")
    assert Sealer(["key-two"]).open(new, "r") == ADDRESS
    with pytest.raises(SealError):
        Sealer(["key-two"]).open(old, "r")


@pytest.mark.parametrize("token", ["", "v1", "v2:a:b:c", "v1:zz:!!:??", "v1:a:b:c:d"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(SealError):
        Sealer(["k"]).open(token, "r")


def test_tampered_ciphertext_is_refused() -> None:
    sealer = Sealer(["k"])
    prefix, key_id, nonce, body = sealer.seal(ADDRESS, "r").split(":")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SealError):
        sealer.open(":".join((prefix, key_id, nonce, flipped)), "r")
