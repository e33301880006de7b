"""Patient addresses sealed at rest (AES-256-GCM), with rotating keys.

An address is kept only while a message still has to reach it, and only in
this sealed form. The keys come from ``CONSENT_MAIL_KEYS`` (comma separated,
newest first), else are derived from ``CONSENT_SECRET_KEYS`` with HKDF under
a label of their own, so that a form-link signing key is never used as is
for encryption. The newest key seals; every listed key opens, so keys rotate
like the others: add a new one first, drop the old one once the addresses
sealed with it are gone (at most the longest request lifetime, 30 days).

The sealed text binds the row it belongs to (associated data): an address
copied onto another request does not open.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1"
LABEL = b"consent-service patient address sealing"


class SealError(ValueError):
    """A sealed address that none of the keys opens (or not a sealed address)."""


class Sealer:
    """Seals and opens short texts with the newest of its keys."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one key is needed")
        self._keys = [_derive(secret) for secret in secrets]

    def seal(self, plaintext: str, bound_to: str) -> str:
        key_id, key = self._keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), bound_to.encode())
        return ":".join((PREFIX, key_id, _b64(nonce), _b64(sealed)))

    def open(self, token: str, bound_to: str) -> str:
        try:
            prefix, key_id, nonce, sealed = token.split(":")
        except ValueError:
            raise SealError("not a sealed value") from None
        if prefix != PREFIX:
            raise SealError("unknown sealing version")
        for candidate_id, key in self._keys:
            if candidate_id != key_id:
                continue
            try:
                opened = AESGCM(key).decrypt(_unb64(nonce), _unb64(sealed), bound_to.encode())
            except (InvalidTag, ValueError):
                raise SealError("the sealed value does not open with its key") from None
            return opened.decode()
        raise SealError("sealed with a key that is no longer configured")


def _derive(secret: str) -> tuple[str, bytes]:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL).derive(secret.encode())
    return hashlib.sha256(key).hexdigest()[:8], key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
