"""http.responses.encoded_response sends what Starlette's Response sends for the same body and headers."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import Response

from citadel_proxy.http.responses import encoded_response, json_response

_ANSWER = {"X-Request-ID": "abc", "x-ratelimit-remaining-requests": "599", "X-Conversation-ID": "c-1"}


async def _sent(response: Response) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    await response({"type": "http", "method": "POST"}, receive, send)
    return messages


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, _ANSWER),
        (200, None),
        (200, {}),
        (201, {"Cache-Control": "no-store"}),
        (204, _ANSWER),
        (304, None),
        (200, {"Content-Type": "application/problem+json"}),  # the caller's own type is kept
        (200, {"content-length": "2", "X-A": "1"}),
        # Names are remembered encoded: past as many as it keeps, and a name seen before, alike.
        (200, {f"X-Name-{i}": str(i) for i in range(300)}),
        (200, {"X-A": "1", "Content-Type": "text/plain"}),
        (200, _ANSWER),
    ],
)
async def test_sends_what_starlette_sends(status: int, headers: dict[str, str] | None) -> None:
    body = b'{"ok":true}'
    ours = await _sent(encoded_response(body, b"application/json", status, headers))
    theirs = await _sent(Response(body, status, headers, "application/json"))
    assert ours == theirs
    assert ours[0]["headers"] == Response(body, status, headers, "application/json").raw_headers


async def test_json_response_encodes_the_value() -> None:
    sent = await _sent(json_response({"a": [1, 2]}, headers={"X-B": "2"}))
    assert sent[1]["body"] == b'{"a":[1,2]}'
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert (b"x-b", b"2") in sent[0]["headers"]
