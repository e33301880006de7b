"""Addresses accepted for patients and for the sender: one mailbox, one line, no smuggling."""

from __future__ import annotations

import pytest

from consent_service.mail.addresses import AddressError, mailbox


@pytest.mark.parametrize("value", ["marie.curie@example.org", "m+tag@sub.example.fr"])
def test_plain_addresses_are_accepted(value: str) -> None:
    assert mailbox(value).addr_spec == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "marie",
        "marie@localhost",
        "@example.org",
        "a@example.org, b@example.org",
        "a@example.org\r\nBcc: victim@example.org",
        "a@example.org\nSubject: hi",
        "Marie <marie@example.org>",
        "(comment) marie@example.org",
        "marie@[192.0.2.1]",
        "x" * 250 + "@example.org",
    ],
)
def test_anything_else_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(AddressError) as raised:
        mailbox(value)
    assert value.strip() == "" or value not in str(raised.value)


def test_a_sender_may_carry_a_display_name() -> None:
    sender = mailbox("Cabinet du Parc <noreply@cabinet.example>", display_name=True)
    assert (sender.display_name, sender.addr_spec) == ("Cabinet du Parc", "noreply@cabinet.example")
