"""The entry point (http.front): request ids, client addresses and CORS alike on both ways in.

The inference routes skip Starlette's router; these tests hold them to what the other routes get.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from tests.core.conftest import AUTH, CHAT, REPO, TEST_KEY, Gateway, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "citadel.access"]


@pytest.mark.parametrize("stream", [False, True])
async def test_inference_answers_carry_the_request_id_once(gateway: Gateway, stream: bool) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        given = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": stream}, headers={"X-Request-ID": "mine-1"}
        )
        minted = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert given.status_code == minted.status_code == 200
    assert given.headers.get_list("x-request-id") == ["mine-1"]
    [new] = minted.headers.get_list("x-request-id")
    assert len(new) == 24 and new != "mine-1"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/chat/completions", b"{not json", AUTH, 400),
        ("/v1/chat/completions", json.dumps(CHAT).encode(), {}, 401),
        ("/v1/agents/stream?type=nope", json.dumps(CHAT).encode(), AUTH, 400),
    ],
)
async def test_refusals_on_the_short_way_are_openai_errors_with_the_request_id(
    gateway: Gateway, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        answer = await client.post(
            path, content=body, headers={**headers, "X-Request-ID": "r-2", "Content-Type": "application/json"}
        )
    assert answer.status_code == status
    assert answer.headers.get_list("x-request-id") == ["r-2"]
    assert set(answer.json()["error"]) >= {"message", "type", "code"}


async def test_other_methods_on_inference_routes_get_405_with_the_request_id(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
        answer = await client.get("/v1/chat/completions", headers={"X-Request-ID": "g-3"})
    assert answer.status_code == 405
    assert answer.headers.get_list("x-request-id") == ["g-3"]
    assert answer.json()["error"]["type"] == "invalid_request_error"


async def test_a_bug_in_an_endpoint_is_a_500_in_openai_shape(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from citadel_proxy.routes import inference

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(inference, "_context", broken)
    with caplog.at_level(logging.ERROR, logger="citadel_proxy.errors"):
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
            answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 500
    assert "a bug" not in answer.text and "Traceback" not in answer.text
    assert answer.json()["error"]["message"].startswith("internal error")
    assert "a bug" in caplog.text  # the traceback is in the log


async def test_cors_and_forwarded_client_on_both_ways_in(
    fake: FakeOllama, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(
        tmp_path,
        fake.port,
        REPO / "pipelines",
        extra_gateway="  trusted_proxies: [127.0.0.1]\n"
        "  cors: {enabled: true, origins: ['https://app.example']}",
    )
    origin = {"Origin": "https://app.example", "X-Forwarded-For": "203.0.113.7"}
    with caplog.at_level(logging.INFO, logger="citadel.access"):
        async with (
            running_gateway(config, fake, server="uvicorn") as gw,
            httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client,
        ):
            streamed = await client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=origin
            )
            models = await client.get("/v1/models", headers=origin)
            preflight = await client.options(
                "/v1/chat/completions",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            stranger = await client.post(
                "/v1/chat/completions", json=CHAT, headers={"Origin": "https://evil.example"}
            )
    assert streamed.status_code == models.status_code == preflight.status_code == 200
    for answer in (streamed, models, preflight):
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in stranger.headers
    [line] = [line for line in access_lines(caplog) if line["stream"]]
    assert line["client"] == "203.0.113.7"  # believed: the peer is a trusted proxy
    assert TEST_KEY not in caplog.text


async def test_a_bug_while_streaming_is_an_sse_error_event_and_ollama_is_let_go(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from citadel_proxy.openai import sse

    def broken(self: object, batch: object) -> bytes:
        raise RuntimeError("a bug in the encoder")

    gateway.fake.next(Behavior.counted(20, token_delay_s=0.05))
    monkeypatch.setattr(sse.ChatChunks, "encode", broken)
    with caplog.at_level(logging.ERROR, logger="citadel_proxy.stream"):
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH) as client:
            answer = await client.post("/v1/voice/chat/completions", json=CHAT)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    [event] = [line for line in answer.text.split("\n\n") if line.startswith("data: ")]
    error = json.loads(event[len("data: ") :])["error"]
    assert error["message"].startswith("internal error") and "a bug" not in answer.text
    assert "a bug in the encoder" in caplog.text
    record = (await gateway.fake.wait_streams(1))[-1]
    await asyncio.wait_for(record.disconnect_event.wait(), timeout=1.0)  # not left generating
