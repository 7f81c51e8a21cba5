"""The translations at the pipeline's edges: OpenAI's wire to the neutral request, and that to Ollama's."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from citadel_proxy.openai.translate import chat_to_request, completion_to_request
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options
from citadel_proxy.pipeline.types import ToolCall, ToolFunction
from citadel_proxy.upstream.translate import (
    chat_to_ollama,
    embed_to_ollama,
    embeddings_to_ollama,
    generate_to_ollama,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": ["string", "null"]}}},
        },
    }
]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
CALL = ToolCall(function=ToolFunction(name="get_weather", arguments=msgspec.Raw(b'{"city":"Oslo"}')), id="c1")


def json_of(value: object) -> Any:
    return json.loads(msgspec.json.encode(value))


def openai_chat(**fields: object) -> ChatRequest:
    return msgspec.json.decode(json.dumps({"model": "phi3", **fields}), type=ChatRequest)


def test_openai_chat_to_neutral_keeps_every_field_it_forwards() -> None:
    wire = openai_chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}},
            ]},
            {"role": "assistant", "content": None, "reasoning": "look it up", "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        tools=TOOLS, tool_choice="auto",
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
        max_completion_tokens=64, temperature=0.0, top_p=0.9, seed=42, stop=["END", "STOP"],
        frequency_penalty=0.5, presence_penalty=-0.5, reasoning_effort="high",
    )  # fmt: skip
    request = chat_to_request(wire, "phi3:latest", True)
    assert (request.kind, request.model, request.stream, request.think) == (
        "chat",
        "phi3:latest",
        True,
        "high",
    )
    assert request.messages == [
        Message(role="system", content="be brief"),
        Message(role="user", content="weather here?", images=["/9j/AAAA"]),
        Message(role="assistant", thinking="look it up", tool_calls=[CALL]),
        Message(role="tool", content="sunny", tool_name="get_weather", tool_call_id="c1"),
    ]
    assert json_of(request.tools) == TOOLS
    assert json_of(request.format) == SCHEMA
    assert request.options == Options(
        num_predict=64, temperature=0.0, top_p=0.9, seed=42, stop=["END", "STOP"],
        frequency_penalty=0.5, presence_penalty=-0.5,
    )  # fmt: skip


def test_openai_chat_to_neutral_leaves_unset_values_unset() -> None:
    request = chat_to_request(openai_chat(messages=[{"role": "user", "content": "hi"}]), "m", False)
    assert request == InferenceRequest(kind="chat", model="m", messages=[Message(role="user", content="hi")])
    assert json_of(request) == {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "hi"}]}
    json_mode = openai_chat(
        messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert json_of(chat_to_request(json_mode, "m", False).format) == "json"
    # max_tokens stands in for max_completion_tokens, and a single stop string becomes a list.
    legacy = openai_chat(messages=[{"role": "user", "content": "hi"}], max_tokens=9, stop="X")
    assert chat_to_request(legacy, "m", False).options == Options(num_predict=9, stop=["X"])


def test_openai_completion_to_neutral() -> None:
    wire = msgspec.json.decode(
        b'{"model":"c","prompt":["def f("],"suffix":"return x","max_tokens":8,"seed":1,"stream":true}',
        type=CompletionRequest,
    )
    request = completion_to_request(wire, "c:code", True)
    assert request == InferenceRequest(
        kind="generate", model="c:code", stream=True, prompt="def f(", suffix="return x",
        options=Options(num_predict=8, seed=1),
    )  # fmt: skip


FULL_CHAT = InferenceRequest(
    kind="chat",
    model="llava:13b",
    stream=True,
    messages=[
        Message(role="system", content="be brief"),
        Message(role="user", content="what is this?", images=["iVBORw0KGgo="]),
        Message(role="assistant", content="", thinking="call the tool", tool_calls=[CALL]),
        Message(role="tool", content="sunny", tool_name="get_weather", tool_call_id="c1"),
    ],
    tools=msgspec.Raw(msgspec.json.encode(TOOLS)),
    format=msgspec.Raw(msgspec.json.encode(SCHEMA)),
    think="high",
    options=Options(
        num_predict=64,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["END"],
        frequency_penalty=0.1,
        presence_penalty=0.2,
    ),
    keep_alive="10m",
)
FULL_GENERATE = InferenceRequest(
    kind="generate",
    model="codellama:code",
    prompt="def add(a, b):\n",
    suffix="\n    return c",
    system="You write Python.",
    template="{{ .Prompt }}",
    raw=False,
    images=["iVBORw0KGgo="],
    format=msgspec.Raw(b'"json"'),
    think=True,
    options=Options(temperature=0.0, seed=3, stop=["\n\n"]),
    keep_alive=0,
)


@pytest.mark.parametrize(
    ("request_", "translate"), [(FULL_CHAT, chat_to_ollama), (FULL_GENERATE, generate_to_ollama)]
)
def test_neutral_to_ollama_carries_every_field(request_: InferenceRequest, translate: Any) -> None:
    """Ollama's wire names the fields as the neutral request does: what is sent is the request, field for
    field, less its kind (the endpoint says it) and with Ollama's default for `stream`."""
    neutral = json_of(request_)
    assert neutral.pop("kind") == request_.kind
    neutral["stream"] = request_.stream
    sent = json_of(translate(request_))
    sent.setdefault("stream", True)
    assert sent == neutral


def test_ollama_chat_wire_as_sent() -> None:
    sent = json_of(chat_to_ollama(FULL_CHAT))
    assert "stream" not in sent  # Ollama's default is true
    assert sent["tools"] == TOOLS and sent["format"] == SCHEMA
    assert sent["think"] == "high" and sent["keep_alive"] == "10m"
    assert sent["messages"][1] == {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    assert sent["messages"][2]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "c1"}
    ]
    assert sent["options"]["stop"] == ["END"] and sent["options"]["num_predict"] == 64
    bare = json_of(chat_to_ollama(InferenceRequest(kind="chat", model="m")))
    assert bare == {"model": "m", "messages": [], "stream": False}


def test_ollama_generate_wire_as_sent() -> None:
    sent = json_of(generate_to_ollama(FULL_GENERATE))
    assert sent == {
        "model": "codellama:code", "prompt": "def add(a, b):\n", "suffix": "\n    return c",
        "system": "You write Python.", "template": "{{ .Prompt }}", "raw": False,
        "images": ["iVBORw0KGgo="], "stream": False, "format": "json",
        "options": {"temperature": 0.0, "seed": 3, "stop": ["\n\n"]}, "think": True, "keep_alive": 0,
    }  # fmt: skip


def test_runner_settings_are_passed_on_beside_the_named_options() -> None:
    options = Options(temperature=0.5, extra={"num_ctx": 8192, "temperature": 1.0})
    request = InferenceRequest(kind="generate", model="m", prompt="x", options=options)
    assert json_of(generate_to_ollama(request))["options"] == {"num_ctx": 8192, "temperature": 0.5}


def test_neutral_embed_to_ollama() -> None:
    request = InferenceRequest(
        kind="embed", model="nomic-embed-text:latest", input=["a", "b"], truncate=False, dimensions=256,
        options=Options(extra={"num_ctx": 512}), keep_alive="5m",
    )  # fmt: skip
    assert json_of(embed_to_ollama(request)) == {
        "model": "nomic-embed-text:latest", "input": ["a", "b"], "truncate": False, "dimensions": 256,
        "options": {"num_ctx": 512}, "keep_alive": "5m",
    }  # fmt: skip
    legacy = msgspec.structs.replace(request, normalize=False)
    assert json_of(embeddings_to_ollama(legacy, "b")) == {
        "model": "nomic-embed-text:latest", "prompt": "b", "options": {"num_ctx": 512}, "keep_alive": "5m",
    }  # fmt: skip
    load_only = InferenceRequest(kind="embed", model="m")
    assert json_of(embed_to_ollama(load_only)) == {"model": "m"}
