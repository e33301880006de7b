"""Email addresses the service accepts: one mailbox, one line, at most 254 characters.

A patient's address comes from practice software and ends up in a ``To``
header; the sender's comes from ``CONSENT_MAIL_FROM`` and ends up in
``From``. Both are parsed by the standard library's RFC 5322 header parser
(``email.headerregistry``), so a value that would smuggle a second
recipient, a comment or a header of its own is refused before it is stored.
Error messages never repeat the value: it may be personal data.
"""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address
from email.policy import default
from typing import cast

MAX_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets


class AddressError(ValueError):
    """Not one deliverable mailbox; the message says why, without the value."""


def mailbox(value: str, *, display_name: bool = False) -> Address:
    """The one mailbox ``value`` names (``Name <a@b>`` only with ``display_name``)."""
    if any(char in value for char in "\r\n\0") or len(value) > MAX_LENGTH:
        raise AddressError(f"One line of at most {MAX_LENGTH} characters.")
    try:
        header = default.header_factory("To", value)
    except (HeaderParseError, IndexError, ValueError):
        raise AddressError("Not an email address.") from None
    defects = getattr(header, "defects", ())
    addresses = cast(tuple[Address, ...], getattr(header, "addresses", ()))
    if defects or len(addresses) != 1:
        raise AddressError("Exactly one email address.")
    (address,) = addresses
    if not address.username or "." not in address.domain or address.domain.startswith("["):
        raise AddressError("An address such as name@example.org.")
    if address.display_name and not display_name:
        raise AddressError("The address alone, without a name.")
    if str(address.addr_spec) != value.strip() and not display_name:
        raise AddressError("The address alone, without comments or quoting.")
    return address
