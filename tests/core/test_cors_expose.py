"""CORS lets a page's JavaScript read the gateway's own headers (conversation, request id, rate limits)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

ORIGIN = "https://app.example"


def cors_config(tmp_path: Path, fake: FakeOllama, extra: str = "") -> Path:
    cors = f"  cors: {{enabled: true, origins: ['{ORIGIN}']{extra}}}"
    return write_config(tmp_path, fake.port, REPO / "pipelines", extra_gateway=cors)


def exposed(response: httpx.Response) -> set[str]:
    listed = response.headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in listed.split(",") if name.strip()}


async def test_a_streamed_answer_exposes_the_gateway_headers(fake: FakeOllama, tmp_path: Path) -> None:
    async with (
        running_gateway(cors_config(tmp_path, fake), fake, server="uvicorn") as gw,
        httpx.AsyncClient(base_url=gw.url, headers={**AUTH, "Origin": ORIGIN}) as client,
    ):
        streamed = await client.post("/v1/gui/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200
    wanted = {
        "x-conversation-id",
        "x-request-id",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "retry-after",
    }
    assert wanted <= exposed(streamed), streamed.headers
    # Exposed names are worth something only when the answer carries them.
    for name in ("x-conversation-id", "x-request-id", "x-ratelimit-remaining-requests"):
        assert streamed.headers.get(name), name


async def test_the_exposed_list_is_a_setting(fake: FakeOllama, tmp_path: Path) -> None:
    config = cors_config(tmp_path, fake, extra=", expose_headers: [X-Request-ID]")
    async with (
        running_gateway(config, fake) as gw,
        httpx.AsyncClient(base_url=gw.url, headers={**AUTH, "Origin": ORIGIN}) as client,
    ):
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200
    assert exposed(answer) == {"x-request-id"}
