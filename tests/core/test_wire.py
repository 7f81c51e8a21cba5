"""OpenAI <-> Ollama translation and the SSE encoders, as pure functions."""

from __future__ import annotations

import json

import msgspec
import pytest

from citadel_proxy import errors
from citadel_proxy.openai.sse import ChatChunks, TextChunks
from citadel_proxy.openai.translate import chat_to_request, completion_to_request
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest
from citadel_proxy.pipeline.types import Delta, Outcome, ToolCall, ToolFunction
from citadel_proxy.upstream.translate import chat_to_ollama, generate_to_ollama


def chat(**fields: object) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.decode(json.dumps(body), type=ChatRequest)


def test_chat_mapping_of_parameters() -> None:
    req = chat(
        max_tokens=5, temperature=0.2, top_p=0.5, stop="END", seed=7,
        response_format={"type": "json_object"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    )  # fmt: skip
    out = json.loads(msgspec.json.encode(chat_to_ollama(chat_to_request(req, "m:latest", True))))
    assert out["model"] == "m:latest"
    assert out["options"] == {"num_predict": 5, "temperature": 0.2, "top_p": 0.5, "seed": 7, "stop": ["END"]}
    assert out["format"] == "json"
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert "stream" not in out  # Ollama's default is true


def test_left_out_sampling_stays_unset_and_stream_false_is_sent() -> None:
    out = json.loads(msgspec.json.encode(chat_to_ollama(chat_to_request(chat(), "m", False))))
    assert "options" not in out and out["stream"] is False


def test_json_schema_images_and_tool_history() -> None:
    req = chat(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\": 1}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
    )  # fmt: skip
    out = json.loads(msgspec.json.encode(chat_to_ollama(chat_to_request(req, "m", True))))
    assert out["format"] == {"type": "object"}
    system, user, assistant, tool = out["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert user == {"role": "user", "content": "what is", "images": ["AAAA"]}
    assert assistant["tool_calls"] == [{"function": {"name": "get", "arguments": {"a": 1}}, "id": "call_1"}]
    assert tool == {"role": "tool", "content": "42", "tool_name": "get", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"messages": [{"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "{oops"}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema"),
    ],
)  # fmt: skip
def test_meaning_changing_requests_are_refused_with_the_field(fields: dict[str, object], param: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        chat_to_request(chat(**fields), "m", True)
    assert caught.value.param == param and caught.value.status == 400


def test_completion_with_suffix_and_refusals() -> None:
    req = msgspec.json.decode(
        b'{"model":"c","prompt":["def f("],"suffix":"return x"}', type=CompletionRequest
    )
    out = json.loads(msgspec.json.encode(generate_to_ollama(completion_to_request(req, "c:code", True))))
    assert out == {"model": "c:code", "prompt": "def f(", "suffix": "return x"}
    for bad, param in [
        (b'"echo":true', "echo"),
        (b'"best_of":3', "best_of"),
        (b'"prompt":["a","b"]', "prompt"),
    ]:
        body = b'{"model":"c","prompt":"x",' + bad + b"}"
        with pytest.raises(errors.UnsupportedParameter) as caught:
            completion_to_request(msgspec.json.decode(body, type=CompletionRequest), "c", True)
        assert caught.value.param == param


def sse(data: bytes) -> list[dict[str, object] | str]:
    out: list[dict[str, object] | str] = []
    for event in data.decode().split("\n\n"):
        if event:
            assert event.startswith("data: ")
            payload = event[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_chat_chunks_role_first_finish_usage_done() -> None:
    enc = ChatChunks("phi3:latest", 1700000000)
    events = sse(enc.encode([Delta("Hel"), Delta('lo "x"')]))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}  # type: ignore[index]
    assert events[1]["choices"][0]["delta"] == {"content": 'lo "x"'}  # type: ignore[index]
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["model"] == "phi3:latest"  # type: ignore[index]
    assert events[0]["id"] == events[1]["id"]  # type: ignore[index]
    tail = sse(enc.trailer(Outcome(finish_reason="length", prompt_tokens=3, completion_tokens=2), True))
    assert tail[0]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}  # type: ignore[index]
    assert tail[1]["choices"] == [] and tail[1]["usage"] == {  # type: ignore[index]
        "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
    }  # fmt: skip
    assert tail[2] == "[DONE]"


def test_chat_chunks_reasoning_and_tool_calls() -> None:
    enc = ChatChunks("m", 1)
    call = ToolCall(function=ToolFunction(name="get", arguments=msgspec.Raw(b'{"city":"Oslo"}')), id="call_a")
    events = sse(enc.encode([Delta(thinking="hmm"), Delta(tool_calls=[call])]))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "reasoning": "hmm"}  # type: ignore[index]
    assert events[1]["choices"][0]["delta"]["tool_calls"] == [  # type: ignore[index]
        {
            "index": 0,
            "id": "call_a",
            "type": "function",
            "function": {"name": "get", "arguments": '{"city":"Oslo"}'},
        }
    ]
    tail = sse(enc.trailer(Outcome(finish_reason="stop"), False))
    assert tail[0]["choices"][0]["finish_reason"] == "tool_calls" and tail[1] == "[DONE]"  # type: ignore[index]


def test_text_chunks() -> None:
    enc = TextChunks("c", 1)
    events = sse(enc.encode([Delta("def"), Delta(thinking="skip me"), Delta(" f")]))
    assert [e["choices"][0]["text"] for e in events] == ["def", " f"]  # type: ignore[index]
    assert events[0]["object"] == "text_completion"  # type: ignore[index]
    tail = sse(enc.trailer(Outcome(finish_reason="stop", prompt_tokens=1, completion_tokens=2), False))
    assert tail[0]["choices"][0]["finish_reason"] == "stop" and tail[-1] == "[DONE]"  # type: ignore[index]
