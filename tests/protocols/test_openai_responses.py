"""OpenAI's Responses API through the gateway, with the `openai` package's `responses.create` and
`responses.stream`: text and item input, instructions, function calls, the event stream, no stored state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.core.conftest import Gateway
from tests.fakes.ollama import Behavior
from tests.protocols.conftest import INFERENCE_KEY

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=INFERENCE_KEY, max_retries=0)


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {INFERENCE_KEY}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as raw:
        yield raw


def last_chat(gateway: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = [r for r in gateway.fake.requests if r.path == "/api/chat"][-1].json
    return body


async def test_text_input_and_instructions(
    gateway: Gateway, client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    response = await client.responses.create(
        model="phi3", input="hi", instructions="be brief", max_output_tokens=40, temperature=0.5
    )
    assert response.output_text == "Hello, world!" and response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = last_chat(gateway)
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert sent["options"] == {"num_predict": 40, "temperature": 0.5}
    raw = await http.post("/v1/responses", json={"model": "phi3", "input": "hi"})
    Response.model_validate(raw.json())


async def test_a_function_call_round_trip_with_items(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    gateway.fake.next(Behavior(tokens=[], tool_calls=[{"name": "weather", "arguments": {"city": "Paris"}}]))
    asked: list[Any] = [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}]
    first = await client.responses.create(model="qwen3:latest", input=asked, tools=[WEATHER])  # type: ignore[list-item]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "weather" and json.loads(call.arguments) == {"city": "Paris"}
    follow = [
        *asked,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = await client.responses.create(model="qwen3:latest", input=follow, tools=[WEATHER])  # type: ignore[list-item]
    assert second.output_text == "Hello, world!"
    messages = last_chat(gateway)["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": {"city": "Paris"}}
    assert messages[2] == {
        "role": "tool",
        "content": "sunny",
        "tool_name": "weather",
        "tool_call_id": call.call_id,
    }


async def test_the_event_stream(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    gateway.fake.next(Behavior(thinking=["Hmm."]))
    async with client.responses.stream(
        model="qwen3:latest", input="hi", reasoning={"effort": "low"}
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.reasoning_text.delta" in kinds
    assert final.output_text == "Hello, world!"
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert last_chat(gateway)["think"] == "low"
    raw = await client.responses.create(model="phi3", input="hi", stream=True)
    events = [event async for event in raw]
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_a_streamed_function_call(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    gateway.fake.next(Behavior(tokens=[], tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}]))
    async with client.responses.stream(model="qwen3:latest", input="weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        final = await stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert json.loads(call.arguments) == {"city": "Oslo"}


async def test_stored_state_is_refused(client: openai.AsyncOpenAI) -> None:
    for asked in ({"store": True}, {"previous_response_id": "resp_1"}):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.responses.create(model="phi3", input="hi", **asked)  # type: ignore[call-overload]
        assert "stateless" in raised.value.message
        assert raised.value.code == "unsupported_parameter"
    assert (await client.responses.create(model="phi3", input="hi", store=False)).output_text


async def test_an_error_mid_stream_is_an_error_event(gateway: Gateway, http: httpx.AsyncClient) -> None:
    gateway.fake.next(Behavior(error_after=2))
    async with http.stream(
        "POST", "/v1/responses", json={"model": "phi3", "input": "hi", "stream": True}
    ) as response:
        lines = [line async for line in response.aiter_lines()]
    assert "event: error" in lines and "event: response.completed" not in lines
