"""Whole answers cached for deterministic chat and completion requests, and replayed to streaming clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import redis as redis_sync

from tests.core.conftest import AUTH, TEST_KEY, Gateway
from tests.fakes.ollama import Behavior

TOKENS = ["The", " quick", " brown", " fox", " jumps"]


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    gateway.fake.set_behavior("phi3:latest", Behavior(tokens=TOKENS))
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        yield client


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "phi3", "messages": [{"role": "user", "content": "Say it"}], "temperature": 0, **extra}


def events(text: str) -> list[Any]:
    """The SSE data of a chat stream, without ids and timestamps."""
    out: list[Any] = []
    for line in text.split("\n\n"):
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            out.append(data)
            continue
        event = json.loads(data)
        out.append({"choices": event["choices"], "usage": event.get("usage")})
    return out


async def test_deterministic_chat_is_cached(gateway: Gateway, http: httpx.AsyncClient) -> None:
    miss = await http.post("/v1/chat/completions", json=chat())
    hit = await http.post("/v1/chat/completions", json=chat())
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.json()["choices"] == miss.json()["choices"] and hit.json()["usage"] == miss.json()["usage"]
    assert hit.json()["choices"][0]["message"]["content"] == "".join(TOKENS)
    assert gateway.fake.count("/api/chat") == 1
    seeded = await http.post("/v1/chat/completions", json=chat(temperature=0.7, seed=4))
    assert seeded.headers["x-cache"] == "MISS" and gateway.fake.count("/api/chat") == 2
    metrics = (await http.get("/metrics")).text
    assert 'citadel_cache_hits_total{cache="responses"} 1.0' in metrics
    assert 'citadel_cache_misses_total{cache="responses"} 2.0' in metrics


async def test_other_requests_are_not_cached(gateway: Gateway, http: httpx.AsyncClient) -> None:
    for _ in range(2):
        answer = await http.post("/v1/chat/completions", json=chat(temperature=0.7))
        assert "x-cache" not in answer.headers
    other = await http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "Else"}]))
    assert other.headers["x-cache"] == "MISS"
    assert gateway.fake.count("/api/chat") == 3


async def test_cached_answer_serves_a_stream_with_the_same_framing(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    await http.post("/v1/chat/completions", json=chat())
    options = {"stream": True, "stream_options": {"include_usage": True}}
    replayed = await http.post("/v1/chat/completions", json=chat(**options))
    assert replayed.headers["x-cache"] == "HIT"
    assert replayed.headers["content-type"].startswith("text/event-stream")
    assert gateway.fake.count("/api/chat") == 1
    live = await http.post(
        "/v1/chat/completions", json=chat(**options), headers={"Cache-Control": "no-store"}
    )
    assert live.headers["x-cache"] == "MISS" and gateway.fake.count("/api/chat") == 2
    # chunk_size 2 regroups the replay exactly as it groups Ollama's tokens; usage is the original's.
    assert events(replayed.text) == events(live.text)
    contents = [e["choices"][0]["delta"].get("content") for e in events(live.text)[:-3]]
    assert contents == ["The quick", " brown fox", " jumps"]


async def test_openai_stream_from_cache(gateway: Gateway, http: httpx.AsyncClient) -> None:
    await http.post("/v1/chat/completions", json=chat())
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TEST_KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="phi3", messages=[{"role": "user", "content": "Say it"}], temperature=0, stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == "".join(TOKENS) and gateway.fake.count("/api/chat") == 1


async def test_bypass_headers(gateway: Gateway, http: httpx.AsyncClient) -> None:
    await http.post("/v1/chat/completions", json=chat(), headers={"Cache-Control": "no-store"})
    assert (await http.post("/v1/chat/completions", json=chat())).headers["x-cache"] == "MISS"
    fresh = await http.post("/v1/chat/completions", json=chat(), headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS"
    assert (await http.post("/v1/chat/completions", json=chat())).headers["x-cache"] == "HIT"
    assert gateway.fake.count("/api/chat") == 3


async def test_always_caches_completions(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = {"model": "phi3", "prompt": "Once upon"}
    miss = await http.post("/v1/completions", json=body)
    hit = await http.post("/v1/completions", json=body)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.json()["choices"][0]["text"] == "".join(TOKENS)
    assert gateway.fake.count("/api/generate") == 1


async def test_corrupted_answer_is_refetched(
    gateway: Gateway, http: httpx.AsyncClient, redis_url: str, redis_prefix: str
) -> None:
    good = (await http.post("/v1/chat/completions", json=chat())).json()
    client = redis_sync.Redis.from_url(redis_url)
    (key,) = client.scan_iter(match=redis_prefix + "responses:*")
    entry = client.get(key)
    assert isinstance(entry, bytes)
    client.set(key, entry[:-1] + bytes([entry[-1] ^ 0x20]))
    answer = await http.post("/v1/chat/completions", json=chat())
    assert answer.headers["x-cache"] == "MISS" and gateway.fake.count("/api/chat") == 2
    assert answer.json()["choices"] == good["choices"]
    assert client.get(key) == entry
    client.close()


async def test_tool_calls_survive_the_cache(gateway: Gateway, http: httpx.AsyncClient) -> None:
    gateway.fake.set_behavior(
        "qwen3:latest", Behavior(tokens=[], tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}])
    )
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    body = chat(model="qwen3", tools=[tool])
    miss = await http.post("/v1/chat/completions", json=body)
    hit = await http.post("/v1/chat/completions", json=body)
    assert hit.headers["x-cache"] == "HIT" and gateway.fake.count("/api/chat") == 1
    calls = hit.json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [{"name": "lookup", "arguments": '{"q":"x"}'}]
    assert [c["function"] for c in miss.json()["choices"][0]["message"]["tool_calls"]] == [
        c["function"] for c in calls
    ]
