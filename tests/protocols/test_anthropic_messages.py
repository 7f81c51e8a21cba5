"""Anthropic's Messages API through the gateway, with the `anthropic` package: whole and streamed, a tool
round trip, bodies validated against the package's own types, errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from tests.core.conftest import Gateway
from tests.fakes.ollama import Behavior
from tests.protocols.conftest import INFERENCE_KEY

HELLO = [{"role": "user", "content": "hi"}]
WEATHER = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
_events = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
def client(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=INFERENCE_KEY, max_retries=0)


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": INFERENCE_KEY, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as raw:
        yield raw


def last_chat(gateway: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = [r for r in gateway.fake.requests if r.path == "/api/chat"][-1].json
    return body


async def test_a_whole_message(
    gateway: Gateway, client: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    answer = await client.messages.create(
        model="phi3", max_tokens=50, messages=HELLO, system="be brief", stop_sequences=["END"],
        extra_body={"temperature": 0.3, "top_k": 10},  # fields this SDK version no longer names
    )  # fmt: skip
    assert answer.content[0].type == "text" and answer.content[0].text == "Hello, world!"
    assert answer.stop_reason == "end_turn" and answer.role == "assistant" and answer.model == "phi3"
    assert answer.usage.output_tokens > 0 and answer.usage.input_tokens > 0
    sent = last_chat(gateway)
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["options"] == {"num_predict": 50, "temperature": 0.3, "stop": ["END"], "top_k": 10}
    raw = await http.post("/v1/messages", json={"model": "phi3", "max_tokens": 5, "messages": HELLO})
    Message.model_validate(raw.json(), strict=False)
    assert raw.json()["type"] == "message"


async def test_a_streamed_message_has_anthropics_event_sequence(
    client: anthropic.AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    async with client.messages.stream(model="phi3", max_tokens=50, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello, world!" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    body = {"model": "phi3", "max_tokens": 50, "messages": HELLO, "stream": True}
    async with http.stream("POST", "/v1/messages", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    for payload in payloads:
        if payload["type"] != "ping":  # a keep-alive, outside the SDK's event union
            _events.validate_python(payload)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert [p["type"] for p in payloads] == names


async def test_a_tool_round_trip(gateway: Gateway, client: anthropic.AsyncAnthropic) -> None:
    gateway.fake.next(Behavior(thinking=["Checking."], tokens=[], tool_calls=[
        {"name": "weather", "arguments": {"city": "Paris"}}]))  # fmt: skip
    asked: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.messages.create(
        model="qwen3:latest", max_tokens=100, messages=asked, tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    [thinking, use] = first.content
    assert thinking.type == "thinking" and thinking.thinking == "Checking."
    assert use.type == "tool_use" and use.name == "weather" and use.input == {"city": "Paris"}
    sent = last_chat(gateway)
    assert sent["think"] is True
    function = {
        "name": "weather",
        "parameters": WEATHER["input_schema"],
        "description": "The weather in a city",
    }
    assert sent["tools"] == [{"type": "function", "function": function}]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}
    turns = [*asked, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = await client.messages.create(
        model="qwen3:latest", max_tokens=100, messages=turns, tools=[WEATHER]
    )
    assert second.content[0].type == "text"
    messages = last_chat(gateway)["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": {"city": "Paris"}}
    assert messages[1]["thinking"] == "Checking."
    assert messages[2] == {"role": "tool", "content": "sunny", "tool_name": "weather", "tool_call_id": use.id}


async def test_a_streamed_tool_call(gateway: Gateway, client: anthropic.AsyncAnthropic) -> None:
    gateway.fake.next(Behavior(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}]))
    async with client.messages.stream(
        model="qwen3:latest", max_tokens=100, messages=HELLO, tools=[WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [block for block in final.content if block.type == "tool_use"]
    assert uses[0].input == {"city": "Oslo"} and uses[0].id


async def test_images_and_count_tokens(gateway: Gateway, client: anthropic.AsyncAnthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="}}
    content: Any = [image, {"type": "text", "text": "what is this?"}]
    await client.messages.create(model="phi3", max_tokens=10, messages=[{"role": "user", "content": content}])
    assert last_chat(gateway)["messages"][0] == {
        "role": "user",
        "content": "what is this?",
        "images": ["aGVsbG8="],
    }
    counted = await client.messages.count_tokens(
        model="phi3", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert counted.input_tokens == 100


async def test_errors_are_in_anthropics_shape(gateway: Gateway, http: httpx.AsyncClient) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        await anthropic.AsyncAnthropic(base_url=gateway.url, api_key=INFERENCE_KEY).messages.create(
            model="nope",
            max_tokens=5,
            messages=HELLO,  # type: ignore[arg-type]
        )
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": raised.value.body["error"]["message"]},
    }  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        await anthropic.AsyncAnthropic(base_url=gateway.url, api_key="cit_wrong").messages.create(
            model="phi3",
            max_tokens=5,
            messages=HELLO,  # type: ignore[arg-type]
        )
    missing = await http.post("/v1/messages", json={"model": "phi3", "messages": HELLO})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    forced = {
        "model": "phi3",
        "max_tokens": 5,
        "messages": HELLO,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
    }
    refused = await http.post("/v1/messages", json=forced)
    assert refused.status_code == 400 and "tool_choice" in refused.json()["error"]["message"]
    gateway.fake.next(Behavior(error_after=2))
    body = {"model": "phi3", "max_tokens": 50, "messages": HELLO, "stream": True}
    async with http.stream("POST", "/v1/messages", json=body) as response:
        lines = [line async for line in response.aiter_lines()]
    assert "event: error" in lines
    assert json.loads(lines[lines.index("event: error") + 1][6:])["error"]["type"] == "api_error"
