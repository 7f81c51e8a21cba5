"""X-Forwarded-For: only addresses become the client address (issue 12, item 6)."""

from __future__ import annotations

from typing import Any

import pytest

from citadel_proxy.http.forwarded import TrustedProxies


def seen_client(peer: str, forwarded: str, trusted: tuple[str, ...] = ("127.0.0.1",)) -> str:
    scope: dict[str, Any] = {
        "type": "http",
        "client": (peer, 5000),
        "headers": [(b"x-forwarded-for", forwarded.encode())],
    }
    TrustedProxies(trusted).apply(scope)
    return str(scope["client"][0])


@pytest.mark.parametrize(
    "forwarded",
    ["not-an-ip-7", "not-an-ip-7, ", "<script>", "203.0.113.9:8080", "fe80::1%not-an-ip", "x" * 5000],
)
def test_a_value_that_is_not_an_address_is_ignored_and_the_peer_used(forwarded: str) -> None:
    assert seen_client("127.0.0.1", forwarded) == "127.0.0.1"


def test_text_nearer_than_the_client_ends_the_walk_at_the_nearest_address() -> None:
    # A trusted hop, then text: the trusted hop is the nearest address anyone vouched for.
    assert seen_client("10.1.1.1", "203.0.113.9, not-an-ip-7, 10.1.1.2", ("10.1.0.0/16",)) == "10.1.1.2"


def test_text_the_client_put_before_nginx_appended_its_address_is_harmless() -> None:
    assert seen_client("127.0.0.1", "not-an-ip-7, 203.0.113.9") == "203.0.113.9"


def test_addresses_are_kept_in_one_spelling() -> None:
    # One client, one address: the limits and the audit trail must not see two clients.
    assert seen_client("127.0.0.1", "2001:DB8:0::1") == "2001:db8::1"
    assert seen_client("127.0.0.1", " 203.0.113.9 ") == "203.0.113.9"
