"""X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

from typing import Any

from citadel_proxy.http.forwarded import TrustedProxies


async def seen_client(peer: str, forwarded: str | None, trusted: list[str]) -> str:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope: dict[str, Any] = {"type": "http", "client": (peer, 5000), "headers": headers}
    TrustedProxies(trusted).apply(scope)
    return str(scope["client"][0])


async def test_trusted_proxy_names_the_client() -> None:
    assert await seen_client("127.0.0.1", "203.0.113.9", ["127.0.0.1"]) == "203.0.113.9"


async def test_untrusted_peer_cannot_pick_an_address() -> None:
    assert await seen_client("198.51.100.7", "203.0.113.9", ["127.0.0.1"]) == "198.51.100.7"


async def test_spoofed_leftmost_entry_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 10.0.0.1"; nginx appended the real address.
    assert await seen_client("127.0.0.1", "10.0.0.1, 203.0.113.9", ["127.0.0.1"]) == "203.0.113.9"
    assert await seen_client("10.1.1.1", "203.0.113.9, 10.1.1.2", ["10.1.0.0/16"]) == "203.0.113.9"
