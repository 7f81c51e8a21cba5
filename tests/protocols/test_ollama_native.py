"""Ollama's own API through the gateway: the `ollama` package (chat, generate, list, show, ps, embed,
streamed and whole) and raw NDJSON, with auth, errors in Ollama's shape, audit, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest

from tests.core.conftest import AUTH, Gateway
from tests.fakes.ollama import Behavior
from tests.protocols.conftest import INFERENCE_KEY

APP = {"Authorization": f"Bearer {INFERENCE_KEY}"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def client(gateway: Gateway) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=gateway.url, headers=APP)


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=APP, timeout=10) as raw:
        yield raw


def last_upstream(gateway: Gateway, path: str) -> dict[str, Any]:
    body: dict[str, Any] = [r for r in gateway.fake.requests if r.path == path][-1].json
    return body


async def audited(http: httpx.AsyncClient, conversation: str) -> httpx.Response:
    """The audit record of a conversation, once the writer has stored it (a batch later, linger_s)."""
    url = f"/management/audit/conversations/{conversation}"
    async with asyncio.timeout(20):
        for _ in range(400):
            detail = await http.get(url, headers=AUTH)
            if detail.status_code == 200:
                return detail
            await asyncio.sleep(0.05)
    raise AssertionError(f"no audit record for {conversation}")


async def test_chat_streams_by_default_with_the_ollama_client(client: ollama.AsyncClient) -> None:
    stream = await client.chat("phi3", [{"role": "user", "content": "hi"}], stream=True)
    parts = [part async for part in stream]
    assert "".join(p.message.content or "" for p in parts) == "Hello, world!"
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    assert parts[-1].done_reason == "stop"
    assert (parts[-1].eval_count or 0) > 0 and (parts[-1].prompt_eval_count or 0) > 0


async def test_chat_whole_with_the_ollama_client(gateway: Gateway, client: ollama.AsyncClient) -> None:
    answer = await client.chat(
        "phi3",
        [{"role": "user", "content": "hi"}],
        options={"temperature": 0.2, "num_ctx": 8192, "top_k": 20},
        keep_alive="10m",
        format="json",
    )
    assert answer.message.content == "Hello, world!"
    assert answer.message.role == "assistant" and answer.done and answer.model == "phi3"
    sent = last_upstream(gateway, "/api/chat")
    assert sent["model"] == "phi3:latest"  # the alias resolved
    assert sent["options"] == {"temperature": 0.2, "num_ctx": 8192, "top_k": 20}
    assert sent["keep_alive"] == "10m" and sent["format"] == "json" and sent["stream"] is False


async def test_chat_tool_calls_and_thinking(gateway: Gateway, client: ollama.AsyncClient) -> None:
    gateway.fake.next(Behavior(thinking=["Let me see."], tokens=[], tool_calls=[
        {"name": "weather", "arguments": {"city": "Paris"}}]))  # fmt: skip
    answer = await client.chat(
        "qwen3:latest", [{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], think=True
    )
    assert answer.message.thinking == "Let me see."
    calls = answer.message.tool_calls or []
    assert calls[0].function.name == "weather" and calls[0].function.arguments == {"city": "Paris"}
    sent = last_upstream(gateway, "/api/chat")
    assert sent["think"] is True and sent["tools"] == [WEATHER_TOOL]
    # The tool result goes back as Ollama's clients send it.
    await client.chat(
        "qwen3:latest",
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "weather"},
        ],
        tools=[WEATHER_TOOL],
    )  # fmt: skip
    messages = last_upstream(gateway, "/api/chat")["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[2] == {"role": "tool", "content": "sunny", "tool_name": "weather"}


async def test_generate_streamed_and_whole(gateway: Gateway, client: ollama.AsyncClient) -> None:
    stream = await client.generate("coder", "def add(a, b):", suffix="return c", stream=True)
    parts = [p async for p in stream]
    assert "".join(p.response for p in parts) == "Hello, world!" and parts[-1].done
    sent = last_upstream(gateway, "/api/generate")
    assert sent["model"] == "codellama:code" and sent["suffix"] == "return c"
    assert sent.get("stream", True) is True
    whole = await client.generate("phi3", "hi", system="be brief", raw=False, images=["aGVsbG8="])
    assert whole.response == "Hello, world!" and whole.done and whole.done_reason == "stop"
    sent = last_upstream(gateway, "/api/generate")
    assert sent["system"] == "be brief" and sent["images"] == ["aGVsbG8="] and sent["stream"] is False


async def test_list_show_ps_and_embed(gateway: Gateway, client: ollama.AsyncClient) -> None:
    listed = {m.model for m in (await client.list()).models}
    # The names a key may ask for, aliases included; configured but not in Ollama: not listed.
    assert {"phi3", "phi3:latest", "coder", "codellama:code", "qwen3:latest"} <= listed
    assert "configured-not-pulled:latest" not in listed and "openchat:latest" not in listed
    shown = await client.show("coder")
    assert shown.capabilities and "insert" in shown.capabilities
    await client.chat("phi3", [{"role": "user", "content": "hi"}])
    running = (await client.ps()).models
    assert [m.model for m in running] == ["phi3:latest"]
    embedded = await client.embed("nomic-embed-text", ["one", "two"])
    assert len(embedded.embeddings) == 2


async def test_raw_ndjson_stream(http: httpx.AsyncClient) -> None:
    body = {"model": "phi3", "messages": [{"role": "user", "content": "hi"}]}
    async with http.stream("POST", "/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["x-request-id"]
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
    assert all(line["done"] is False for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == "Hello, world!"
    whole = await http.post("/api/generate", json={"model": "phi3", "prompt": "hi", "stream": False})
    assert whole.headers["content-type"] == "application/json"
    assert whole.json()["response"] == "Hello, world!" and whole.json()["done"] is True


async def test_errors_are_in_ollamas_shape(gateway: Gateway, http: httpx.AsyncClient) -> None:
    unknown = await http.post("/api/chat", json={"model": "nope", "messages": []})
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    nokey = await http.post("/api/generate", json={"model": "phi3"}, headers={"Authorization": ""})
    assert nokey.status_code == 401 and "API key" in nokey.json()["error"]
    badjson = await http.post("/api/chat", content=b"{")
    assert badjson.status_code == 400 and set(badjson.json()) == {"error"}
    tags = await http.get("/api/tags", headers={"Authorization": "Bearer cit_wrong"})
    assert tags.status_code == 401 and set(tags.json()) == {"error"}
    with pytest.raises(ollama.ResponseError) as raised:
        await ollama.AsyncClient(host=gateway.url, headers=APP).chat("nope", [])
    assert raised.value.status_code == 404 and "not configured" in raised.value.error


async def test_an_error_mid_stream_is_an_error_line(gateway: Gateway, client: ollama.AsyncClient) -> None:
    gateway.fake.next(Behavior(error_after=2))
    with pytest.raises(ollama.ResponseError) as raised:
        async for _part in await client.chat("phi3", [{"role": "user", "content": "hi"}], stream=True):
            pass
    assert "fake failure" in raised.value.error


async def test_pull_and_delete_need_the_admin_scope(gateway: Gateway, http: httpx.AsyncClient) -> None:
    refused = await http.post("/api/pull", json={"model": "openchat"})
    assert refused.status_code == 403 and set(refused.json()) == {"error"}
    admin = ollama.AsyncClient(host=gateway.url, headers=AUTH)
    progress = [p async for p in await admin.pull("openchat", stream=True)]
    assert progress[-1].status == "success"
    assert (await admin.pull("openchat")).status == "success"
    assert (await http.request("DELETE", "/api/delete", json={"model": "openchat"})).status_code == 403
    await admin.delete("openchat")
    assert "openchat:latest" not in gateway.fake.models


async def test_root_version_and_the_audit_and_metrics(gateway: Gateway, http: httpx.AsyncClient) -> None:
    assert (await http.get("/")).text == "Ollama is running"
    assert (await http.head("/")).status_code == 200
    assert (await http.get("/api/version")).json()["version"]
    chat = {"model": "phi3", "messages": [{"role": "user", "content": "hello there"}], "stream": False}
    conversation = (await http.post("/api/chat", json=chat)).headers["X-Conversation-ID"]
    assert 'route="/api/chat"' in (await http.get("/metrics")).text
    detail = await audited(http, conversation)
    said = [(m["role"], m["content"]) for m in detail.json()["messages"]]
    assert said == [("user", "hello there"), ("assistant", "Hello, world!")]


async def test_rate_limits_apply(gateway: Gateway, http: httpx.AsyncClient) -> None:
    answer = await http.post("/api/generate", json={"model": "phi3", "prompt": "hi", "stream": False})
    assert answer.headers["x-ratelimit-limit-requests"] == "600"  # the pipeline's, below the key's 1000
