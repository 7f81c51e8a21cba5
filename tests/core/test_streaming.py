"""Agent streams and OpenAI streaming, driven by the OpenAI SDK and raw HTTP through a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import openai
import pytest
from multidict import CIMultiDictProxy

from tests.core.conftest import AUTH, CHAT, REPO, TEST_KEY, Gateway, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama, counted_tokens


def client(gw: Gateway, base: str = "/v1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + base, api_key=TEST_KEY, max_retries=0)


async def sse_events(response: aiohttp.ClientResponse) -> list[str]:
    """Every SSE data payload in arrival order (comments skipped)."""
    text = (await response.read()).decode()
    return [block[len("data: ") :] for block in text.split("\n\n") if block.startswith("data: ")]


async def post(gw: Gateway, path: str, body: dict[str, object], **kwargs: object) -> aiohttp.ClientResponse:
    session = aiohttp.ClientSession(headers=AUTH)
    try:
        response = await session.post(gw.url + path, json=body, **kwargs)  # type: ignore[arg-type]
        await response.read()
    finally:
        await session.close()
    return response


async def raw_events(
    gw: Gateway, path: str, body: dict[str, object]
) -> tuple[int, CIMultiDictProxy[str], list[str]]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gw.url + path, json=body) as response,
    ):
        return response.status, response.headers, await sse_events(response)


async def test_voice_sends_one_token_per_event_with_the_openai_sdk(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(8, tokens_per_write=8))
    oai = client(gateway, "/v1/voice")  # a profile is a base URL
    chunks = [c async for c in await oai.chat.completions.create(
        model="phi3", messages=[{"role": "user", "content": "hi"}], stream=True)]  # fmt: skip
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == counted_tokens(8)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "phi3:latest"


@pytest.mark.parametrize(
    ("path", "size"), [("/v1/gui/chat/completions", 10), ("/v1/voice/chat/completions", 1)]
)
async def test_events_hold_chunk_size_tokens(gateway: Gateway, path: str, size: int) -> None:
    gateway.fake.next(Behavior.counted(25, tokens_per_write=25))
    status, headers, events = await raw_events(gateway, path, CHAT)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
    assert events[-1] == "[DONE]"
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    tokens = counted_tokens(25)
    expected = ["".join(tokens[i : i + size]) for i in range(0, 25, size)]
    assert texts == expected


async def test_copilot_streams_text_completion_chunks_of_five_with_suffix(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(12, tokens_per_write=12))
    oai = client(gateway, "/v1/copilot")
    chunks = [c async for c in await oai.completions.create(
        model="coder", prompt="def add(a, b):\n", suffix="\n    return c", stream=True)]  # fmt: skip
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    tokens = counted_tokens(12)
    assert texts == ["".join(tokens[0:5]), "".join(tokens[5:10]), "".join(tokens[10:12])]
    assert chunks[0].object == "text_completion"
    sent = [r.json for r in gateway.fake.requests if r.path == "/api/generate"][-1]
    assert sent["suffix"] == "\n    return c" and sent["model"] == "codellama:code"


async def test_max_delay_flushes_a_partial_chunk(gateway: Gateway) -> None:
    # gui holds up to 10 tokens for at most 100 ms: tokens 300 ms apart must each leave alone.
    gateway.fake.next(Behavior.counted(3, token_delay_s=0.3))
    _, _, events = await raw_events(gateway, "/v1/gui/chat/completions", CHAT)
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert texts == counted_tokens(3)


async def test_include_usage_chunk(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(4, prompt_eval_count=11, eval_count=4))
    oai = client(gateway)
    chunks = [c async for c in await oai.chat.completions.create(
        model="phi3", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})]  # fmt: skip
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 4, 15)


async def test_non_streaming_chat_and_completion_with_the_sdk(gateway: Gateway) -> None:
    oai = client(gateway)
    gateway.fake.next(Behavior.counted(5, prompt_eval_count=7, eval_count=5, done_reason="length"))
    answer = await oai.chat.completions.create(model="phi3", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "".join(counted_tokens(5))
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.total_tokens == 12
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    gateway.fake.next(Behavior.counted(3))
    text = await oai.completions.create(model="phi3", prompt="Say")
    assert text.choices[0].text == "".join(counted_tokens(3))
    assert [r.json["stream"] for r in gateway.fake.requests if r.json and "stream" in r.json] == [
        False,
        False,
    ]


async def test_tool_calls_stream_and_non_stream(gateway: Gateway) -> None:
    oai = client(gateway)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"name": "get_weather", "arguments": {"city": "Tokyo"}}
    gateway.fake.next(Behavior(tokens=[], tool_calls=[call]))
    answer = await oai.chat.completions.create(
        model="qwen3", messages=[{"role": "user", "content": "weather?"}], tools=tools
    )  # type: ignore[arg-type]
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Tokyo"}
    assert answer.choices[0].finish_reason == "tool_calls"
    gateway.fake.next(Behavior(tokens=["ok"], tool_calls=[call]))
    chunks = [
        c
        async for c in await oai.chat.completions.create(
            model="qwen3", messages=[{"role": "user", "content": "w"}], tools=tools, stream=True
        )
    ]  # type: ignore[arg-type]
    streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert streamed[0].function is not None and streamed[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_agents_stream_by_type_and_unknown_type(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(3))
    status, _, events = await raw_events(gateway, "/v1/agents/stream?type=research", CHAT)
    assert status == 200 and events[-1] == "[DONE]"
    gateway.fake.next(Behavior.counted(3))
    status, _, events = await raw_events(gateway, "/v1/agents/stream?agent_type=voice", CHAT)
    assert status == 200 and len(events) == 3 + 2
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gateway.url + "/v1/agents/stream?type=telepathy", json=CHAT) as bad,
    ):
        error = (await bad.json())["error"]
        assert bad.status == 400 and error["code"] == "unknown_agent_type"
        assert "voice" in error["message"] and "research" in error["message"]


async def test_models_and_health(gateway: Gateway) -> None:
    oai = client(gateway)
    ids = [m.id async for m in oai.models.list()]
    assert "phi3" in ids and "phi3:latest" in ids
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(gateway.url + "/health") as response,
    ):
        body = await response.json()
        assert response.status == 200 and body["checks"]["ollama"]["status"] == "ok"


async def test_keepalive_comments_while_the_model_loads(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(2, first_token_delay_s=1.2))
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gateway.url + "/v1/voice/chat/completions", json=CHAT) as response,
    ):
        assert response.status == 200  # headers came long before the first token
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 1.0)
        assert first == b": keep-alive\n\n"
        rest = (await response.read()).decode()
    assert rest.count(": keep-alive") >= 1 and rest.endswith("data: [DONE]\n\n")


async def test_header_grace_zero_opens_every_stream_at_once(fake: FakeOllama, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    config.write_text(config.read_text().replace("header_grace_ms: 100", "header_grace_ms: 0"))
    async with (
        running_gateway(config, fake) as gw,
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gw.url + "/v1/voice/chat/completions", json=CHAT) as response,
    ):
        assert response.status == 200
        text = (await response.read()).decode()
    assert text.startswith(": keep-alive\n\n") and text.endswith("data: [DONE]\n\n")
    assert text.count('"content"') >= 1


async def test_split_lines_and_a_one_megabyte_line(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(6, split_writes=7, big_line_bytes=1_000_000, big_line_index=2))
    _, _, events = await raw_events(gateway, "/v1/voice/chat/completions", CHAT)
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert len(texts) == 6 and len(texts[2]) >= 999_000
    assert [t for i, t in enumerate(texts) if i != 2] == [
        t for i, t in enumerate(counted_tokens(6)) if i != 2
    ]


async def test_client_host_and_origin_are_not_forwarded(gateway: Gateway) -> None:
    # The fake refuses foreign Host and Origin with an empty 403, exactly as Ollama does.
    gateway.fake.next(Behavior.counted(2))
    headers = {"Origin": "https://evil.example", "Host": "api.example.com"}
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
