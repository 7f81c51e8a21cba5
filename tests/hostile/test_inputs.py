"""What a request or Ollama's answer may make a worker hold: nesting, messages, max_tokens, answer sizes
(issue 12: 4). Every refusal is the caller's error shape, never a 500 or a traceback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from citadel_proxy import errors
from citadel_proxy.pipeline.types import Outcome
from citadel_proxy.upstream.ndjson import UpstreamStream, chat_delta, chat_line_decoder
from tests.core.conftest import AUTH, CHAT, Gateway
from tests.fakes.ollama import Behavior, FakeOllama
from tests.hostile.limits_helpers import gateway_on

LIMITS = "  max_messages: 5\n  max_output_tokens: 1000\n  max_json_depth: 20"
CAPS = "max_answer_bytes: 65536, max_line_bytes: 16384"
TOOLS_CHAT = {"model": "qwen3", "messages": [{"role": "user", "content": "hi"}]}
PROMPT = {"model": "phi3", "prompt": "Once"}
EMBED = {"model": "nomic-embed-text", "input": "hello"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, "uvicorn", gateway=LIMITS, ollama=CAPS) as gw:
        yield gw


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def tool(parameters: str) -> str:
    return '[{"type": "function", "function": {"name": "f", "parameters": ' + parameters + "}}]"


def with_raw(body: dict[str, object], key: str, raw: str) -> bytes:
    """`body` with `key` set to the JSON text `raw` (json.dumps cannot write 10,000 levels)."""
    return (json.dumps(body)[:-1] + f', "{key}": {raw}}}').encode()


def call_with(arguments: str) -> dict[str, object]:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": calls}]
    return {**TOOLS_CHAT, "messages": messages}


async def post(gw: Gateway, path: str, body: bytes | dict[str, object]) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.url + path, data=data, headers=headers) as r,
    ):
        return r.status, await r.text()


def error_of(text: str) -> dict[str, object]:
    error: dict[str, object] = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in str(error["message"])
    return error


DEEP = [
    # Before: 500 and a RecursionError traceback.
    ("/v1/plain", with_raw(CHAT, "unknown", nested(10_000)), None),
    ("/v1/plain", with_raw(TOOLS_CHAT, "tools", tool(nested(10_000))), None),
    ("/v1/plain", call_with(nested(10_000)), "messages[1].tool_calls[0].function.arguments"),
    ("/v1/text", with_raw(PROMPT, "unknown", nested(10_000)), None),
    ("/api/embed", with_raw(EMBED, "unknown", nested(10_000)), None),
    ("/api/embed", with_raw(EMBED, "options", '{"a": ' + nested(10_000) + "}"), None),
    ("/v1/embeddings", with_raw(EMBED, "unknown", nested(10_000)), None),
    # Past gateway.max_json_depth (20) in the free-form values that go on to Ollama.
    ("/v1/plain", with_raw(TOOLS_CHAT, "tools", tool(nested(30))), "tools[0].function.parameters"),
    ("/v1/plain", call_with('{"a": ' + nested(30) + "}"), "messages[1].tool_calls[0].function.arguments"),
    (
        "/v1/plain",
        with_raw(
            TOOLS_CHAT,
            "response_format",
            '{"type": "json_schema", "json_schema": {"schema": ' + nested(30) + "}}",
        ),
        "response_format.json_schema.schema",
    ),
    ("/api/embed", with_raw(EMBED, "options", '{"a": ' + nested(30) + "}"), "options"),
]


@pytest.mark.parametrize(("path", "body", "param"), DEEP)
async def test_deep_nesting_is_400(gw: Gateway, path: str, body: bytes, param: str | None) -> None:
    status, text = await post(gw, path, body)
    error = error_of(text)
    assert (status, error["code"], error["param"]) == (400, "json_too_deep", param), text


async def test_nesting_within_the_limit_goes_through(gw: Gateway) -> None:
    schema = '{"type": "object", "properties": {"a": {"type": "array", "items": ' + nested(10) + "}}}"
    status, text = await post(gw, "/v1/plain", with_raw(TOOLS_CHAT, "tools", tool(schema)))
    assert status == 200, text
    assert gw.fake.requests[-1].json["tools"][0]["function"]["parameters"]["properties"]["a"]["items"]


async def test_too_many_messages_is_400(gw: Gateway) -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(6)]
    status, text = await post(gw, "/v1/plain", {**CHAT, "messages": messages})
    error = error_of(text)
    assert (status, error["code"], error["param"]) == (400, "too_many_messages", "messages")
    status, _ = await post(gw, "/v1/plain", {**CHAT, "messages": messages[:5]})
    assert status == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/plain", {**CHAT, "max_tokens": 10**30}, "max_tokens"),
        ("/v1/plain", {**CHAT, "max_completion_tokens": 1001}, "max_completion_tokens"),
        ("/v1/text", {**PROMPT, "max_tokens": 10**30}, "max_tokens"),
    ],
)
async def test_max_tokens_past_the_ceiling_is_400(
    gw: Gateway, path: str, body: dict[str, object], param: str
) -> None:
    asked = gw.fake.count("/api/chat") + gw.fake.count("/api/generate")
    status, text = await post(gw, path, body)
    error = error_of(text)
    assert (status, error["param"]) == (400, param), text
    # Before: forwarded to Ollama as num_predict.
    assert gw.fake.count("/api/chat") + gw.fake.count("/api/generate") == asked
    status, _ = await post(gw, path, {**body, param: 1000})
    assert status == 200


async def test_an_oversize_whole_answer_is_a_clean_502(gw: Gateway) -> None:
    gw.fake.next(Behavior(big_line_bytes=200_000))  # the answer's content: 200 kB, over the 64 KiB cap
    status, text = await post(gw, "/v1/plain", CHAT)
    error = error_of(text)
    assert (status, error["code"]) == (502, "upstream_too_large")
    assert "xxxx" not in text


async def test_an_oversize_line_is_a_clean_error_event(gw: Gateway) -> None:
    gw.fake.next(Behavior(big_line_bytes=50_000, big_line_index=1))  # over the 16 KiB line cap
    status, text = await post(gw, "/v1/short", CHAT)
    events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
    assert status == 200 and "xxxx" not in text and "[DONE]" not in text
    assert error_of(events[-1])["code"] == "upstream_too_large"
    record = gw.fake.streams[-1]
    assert record.outcome != "done" or record.disconnected


class _Lines:
    """The `content` of an answer whose bytes are given: what UpstreamStream reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def readany(self) -> bytes:
        data, self._data = self._data, b""
        return data


async def test_an_answer_nested_too_deep_is_upstream_malformed() -> None:
    deep = '{"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", '
    deep += '"arguments": ' + nested(10_000) + '}}]}, "done": false}\n'
    answer = type("Answer", (), {"content": _Lines(deep.encode())})()
    stream = UpstreamStream(answer, chat_line_decoder, chat_delta, Outcome())  # type: ignore[arg-type]
    # Before: a RecursionError, reported as the gateway's own bug.
    with pytest.raises(errors.UpstreamMalformed):
        await stream.read()
