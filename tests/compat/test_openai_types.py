"""Every OpenAI-shaped body the gateway sends, validated with the openai package's own pydantic types.

The SDK itself builds its objects without validation, so a missing key (a whole answer's `message.role`)
passes the SDK and fails only in strict clients such as LangChain; validating here catches it at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai.types import Completion as OpenAICompletion
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject

from tests.compat.conftest import EMBED_MODEL
from tests.core.conftest import AUTH, CHAT, Gateway
from tests.fakes.ollama import Behavior

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        yield client


def events(text: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body, [DONE] and comments left out."""
    payloads = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


async def test_a_whole_chat_answer_is_a_chat_completion_with_the_role(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    answer = ChatCompletion.model_validate(body)
    assert answer.choices[0].message.content == "Hello, world!"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0


async def test_a_chat_answer_with_tool_calls_and_reasoning_is_a_chat_completion(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    gateway.fake.next(
        Behavior(
            tokens=[],
            thinking=["Let me see."],
            tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
        )
    )
    response = await http.post(
        "/v1/chat/completions",
        json={
            "model": "qwen3",
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [WEATHER_TOOL],
        },
    )
    assert response.status_code == 200, response.text
    answer = ChatCompletion.model_validate(response.json())
    message = answer.choices[0].message
    assert message.role == "assistant" and answer.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls and message.tool_calls[0].type == "function"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]


async def test_every_chat_stream_chunk_is_a_chat_completion_chunk(http: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    chunks = [ChatCompletionChunk.model_validate(e) for e in events(response.text)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_a_whole_completion_is_a_completion(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/completions", json={"model": "phi3", "prompt": "Once"})
    assert response.status_code == 200
    answer = OpenAICompletion.model_validate(response.json())
    assert answer.choices[0].text == "Hello, world!" and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None


async def test_a_completion_stream_has_completion_chunks(http: httpx.AsyncClient) -> None:
    body = {"model": "phi3", "prompt": "Once", "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/completions", json=body)
    assert response.status_code == 200
    payloads = events(response.text)
    # As OpenAI streams them, chunks before the last carry finish_reason null, which the Completion type
    # (written for whole answers) does not allow; everything else about them must be a Completion.
    for payload in payloads[:-2]:
        assert payload["choices"][0]["finish_reason"] is None
        OpenAICompletion.model_validate(
            {**payload, "choices": [{**payload["choices"][0], "finish_reason": "stop"}]}
        )
    finish, usage = (OpenAICompletion.model_validate(p) for p in payloads[-2:])
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage is not None


async def test_embeddings_are_a_create_embedding_response(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": ["a", "b"]})
    assert response.status_code == 200
    answer = CreateEmbeddingResponse.model_validate(response.json())
    assert [d.index for d in answer.data] == [0, 1] and len(answer.data[0].embedding) > 0


async def test_the_model_list_and_a_model_are_openai_models(http: httpx.AsyncClient) -> None:
    listing = (await http.get("/v1/models")).json()
    assert listing["object"] == "list"
    models = [Model.model_validate(m) for m in listing["data"]]
    assert "phi3" in {m.id for m in models}
    response = await http.get("/v1/models/phi3")
    assert response.status_code == 200
    assert Model.model_validate(response.json()).id == "phi3"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", {"model": "phi3"}, 400),
        ("POST", "/v1/chat/completions", {**CHAT, "logprobs": True}, 400),
        ("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, 404),
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/v1/nope/models", None, 404),
    ],
)
async def test_error_bodies_are_openai_error_objects(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None, status: int
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == status
    ErrorObject.model_validate(response.json()["error"])


async def test_an_unknown_key_gets_an_openai_error_object(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": "Bearer nope"}) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 401
    ErrorObject.model_validate(response.json()["error"])


async def test_stream_chunks_with_reasoning_and_tool_calls_are_chat_completion_chunks(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    gateway.fake.next(
        Behavior(
            tokens=[],
            thinking=["Let me see."],
            tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
        )
    )
    body = {
        "model": "qwen3",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    chunks = [ChatCompletionChunk.model_validate(e) for e in events(response.text)]
    assert chunks[0].choices[0].delta.role == "assistant"
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert calls and calls[0].index == 0 and calls[0].function is not None
    assert calls[0].function.name == "weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
