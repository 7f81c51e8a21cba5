"""Request ids (http.front): a client's id kept when well formed, a new one otherwise, always returned.

Here through the way in that Starlette serves; the inference routes' short way is covered end to end in
tests/core/test_front.py.
"""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from citadel_proxy.http.forwarded import TrustedProxies
from citadel_proxy.http.front import Front

MINTED = re.compile(r"[0-9a-f]{24}")


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.request_id)


async def stream(request: Request) -> StreamingResponse:
    async def parts():  # type: ignore[no-untyped-def]
        yield b"one,"
        yield b"two"

    return StreamingResponse(parts(), media_type="text/plain")


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/echo", echo), Route("/stream", stream)])
    transport = httpx.ASGITransport(app=Front(app, TrustedProxies([]), {}))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_given_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/echo", headers={"X-Request-ID": "abc-123.DEF_4"})
    assert response.text == "abc-123.DEF_4"
    assert response.headers["x-request-id"] == "abc-123.DEF_4"


@pytest.mark.parametrize(
    "given",
    ["has space", "a" * 129, "semi;colon", "newline\\nX-Injected: 1", "é-unicode", ""],
)
async def test_invalid_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/echo", headers={"X-Request-ID": given.encode()})
    assert MINTED.fullmatch(response.text)
    assert response.headers["x-request-id"] == response.text


async def test_longest_valid_id_is_kept(client: httpx.AsyncClient) -> None:
    given = "x" * 128
    assert (await client.get("/echo", headers={"X-Request-ID": given})).text == given


async def test_missing_id_is_minted_per_request(client: httpx.AsyncClient) -> None:
    first, second = await client.get("/echo"), await client.get("/echo")
    assert MINTED.fullmatch(first.text)
    assert first.headers["x-request-id"] == first.text
    assert first.text != second.text


async def test_streamed_response_gets_the_header_and_its_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/stream", headers={"X-Request-ID": "s-1"})
    assert response.headers["x-request-id"] == "s-1"
    assert response.headers.get_list("x-request-id") == ["s-1"]
    assert response.text == "one,two"
