"""X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from citadel_proxy.http.forwarded import ForwardedFor


async def seen_client(peer: str, forwarded: str | None, trusted: list[str]) -> str:
    seen: dict[str, str] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["client"] = scope["client"][0]

    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 5000), "headers": headers}

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    await ForwardedFor(app, trusted)(scope, receive, send)
    return seen["client"]


async def test_trusted_proxy_names_the_client() -> None:
    assert await seen_client("127.0.0.1", "203.0.113.9", ["127.0.0.1"]) == "203.0.113.9"


async def test_untrusted_peer_cannot_pick_an_address() -> None:
    assert await seen_client("198.51.100.7", "203.0.113.9", ["127.0.0.1"]) == "198.51.100.7"


async def test_spoofed_leftmost_entry_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 10.0.0.1"; nginx appended the real address.
    assert await seen_client("127.0.0.1", "10.0.0.1, 203.0.113.9", ["127.0.0.1"]) == "203.0.113.9"
    assert await seen_client("10.1.1.1", "203.0.113.9, 10.1.1.2", ["10.1.0.0/16"]) == "203.0.113.9"
