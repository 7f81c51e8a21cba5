"""The audit stage without a database: records land in the embedded SQLite store, one per exchange."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import msgspec
import pytest
from starlette.datastructures import Headers

from citadel_proxy.audit import AuditOptions, AuditRecord, open_audit
from citadel_proxy.audit.content import ContentPolicy
from citadel_proxy.errors import GatewayError, InvalidRequest, UpstreamIncomplete
from citadel_proxy.openai.translate import chat_to_request
from citadel_proxy.openai.wire import ChatRequest
from citadel_proxy.pipeline.request import InferenceRequest, Message
from citadel_proxy.pipeline.types import Completion, Context, Delta, Reply
from citadel_proxy.stages.audit import STAGE, AuditSettings, given_conversation
from tests.audit.conftest import (
    FakeStream,
    chat_context,
    completion_context,
    drain,
    make_config,
    services,
    stored_records,
)


def log_records(tmp_path: Path) -> list[AuditRecord]:
    return stored_records(tmp_path / "data" / "audit.sqlite3")


async def run_stage(
    tmp_path: Path, ctx: Context, reply: Reply | Exception, **settings: object
) -> Reply | None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(make_config(None, "", tmp_path), stack, AuditOptions(segment_bytes=4096))
        stage = STAGE.build(AuditSettings(**settings), services(sink))  # type: ignore[arg-type]

        async def inner(_ctx: Context) -> Reply:
            if isinstance(reply, Exception):
                raise reply
            return reply

        try:
            result = await stage(ctx, inner)
        except GatewayError:
            return None
        if result.stream is not None:
            await drain(result.stream)
        return result
    return None


async def test_non_stream_record(tmp_path: Path) -> None:
    ctx = chat_context("hello there")
    completion = Completion(content="hi!", prompt_tokens=5, completion_tokens=2)
    await run_stage(tmp_path, ctx, Reply(completion=completion))
    [record] = log_records(tmp_path)
    assert record.conversation_id == ctx.conversation_id == ctx.response_headers["X-Conversation-ID"]
    assert uuid.UUID(record.conversation_id).version == 7
    assert (record.route, record.pipeline, record.model_requested, record.model) == (
        "/v1/chat/completions", "chat", "phi3", "phi3:latest")  # fmt: skip
    assert (record.key_name, record.client, record.status, record.error_code) == (
        "team-a",
        "127.0.0.1",
        200,
        None,
    )
    assert (record.prompt_tokens, record.completion_tokens, record.stream) == (5, 2, False)
    assert record.request["messages"] == [{"role": "user", "content": "hello there"}]
    assert record.request["options"] == {"temperature": 0.2}
    assert record.response == {"content": "hi!", "finish_reason": "stop"}
    assert [(m.role, m.content) for m in record.messages] == [("user", "hello there"), ("assistant", "hi!")]


async def test_stream_record_assembles_content_thinking_and_tools(tmp_path: Path) -> None:
    from citadel_proxy.pipeline.types import ToolCall, ToolFunction

    ctx = chat_context("weather?", stream=True)
    call = ToolCall(function=ToolFunction(name="get_weather", arguments=msgspec.Raw(b'{"city":"Oslo"}')))
    batches = [
        [Delta(thinking="hmm ")],
        [Delta(content="It is "), Delta(content="sunny")],
        [Delta(tool_calls=[call])],
    ]
    await run_stage(tmp_path, ctx, Reply(stream=FakeStream(ctx, batches)))
    [record] = log_records(tmp_path)
    assert record.stream and record.status == 200 and record.ttft_ms is not None
    assert record.response == {
        "content": "It is sunny",
        "thinking": "hmm ",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        "finish_reason": "stop",
    }
    assert (record.prompt_tokens, record.completion_tokens) == (7, 3)


async def test_stream_error_midway_is_recorded_with_partial_answer(tmp_path: Path) -> None:
    ctx = chat_context("tell me", stream=True)
    stream = FakeStream(
        ctx, [[Delta(content="partial")]], fail=UpstreamIncomplete("stream ended without done")
    )
    await run_stage(tmp_path, ctx, Reply(stream=stream))
    [record] = log_records(tmp_path)
    assert (record.status, record.error_code) == (502, "upstream_incomplete")
    assert record.response is not None and record.response["content"] == "partial"
    assert record.response["error"]["message"] == "stream ended without done"


async def test_client_disconnect_is_recorded_once(tmp_path: Path) -> None:
    ctx = chat_context("long story", stream=True)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(make_config(None, "", tmp_path), stack)
        stage = STAGE.build(AuditSettings(), services(sink))  # type: ignore[arg-type]
        inner_stream = FakeStream(ctx, [[Delta(content="once")], [Delta(content=" upon")]])

        async def inner(_ctx: Context) -> Reply:
            return Reply(stream=inner_stream)

        reply = await stage(ctx, inner)
        assert reply.stream is not None
        assert await reply.stream.read() == [Delta(content="once")]
        await reply.stream.aclose()  # the response writer always closes; here the client left early
        await reply.stream.aclose()
        assert inner_stream.closed
    [record] = log_records(tmp_path)
    assert (record.status, record.error_code) == (499, "client_closed")
    assert record.response is not None and record.response["content"] == "once"


async def test_error_before_answer_is_recorded(tmp_path: Path) -> None:
    ctx = chat_context("hi")
    await run_stage(tmp_path, ctx, InvalidRequest("temperature too high", param="temperature"))
    [record] = log_records(tmp_path)
    assert (record.status, record.error_code) == (400, "invalid_request")
    assert record.response == {"error": {"code": "invalid_request", "message": "temperature too high"}}


async def test_cancelled_request_is_recorded(tmp_path: Path) -> None:
    ctx = chat_context("hi")
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(make_config(None, "", tmp_path), stack)
        stage = STAGE.build(AuditSettings(), services(sink))  # type: ignore[arg-type]
        started = asyncio.Event()

        async def inner(_ctx: Context) -> Reply:
            started.set()
            await asyncio.sleep(60)
            raise AssertionError("unreachable")

        task = asyncio.create_task(stage(ctx, inner))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [record] = log_records(tmp_path)
    assert (record.status, record.error_code) == (499, "client_closed")


async def test_conversation_header_kept_or_refused(tmp_path: Path) -> None:
    given = str(uuid.uuid4())
    ctx = chat_context("again", headers={"X-Conversation-ID": given.upper()})
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="ok")))
    assert ctx.response_headers["X-Conversation-ID"] == given
    bad = chat_context("again", headers={"X-Conversation-ID": "'; DROP TABLE conversations; --"})
    assert await run_stage(tmp_path, bad, Reply(completion=Completion(content="never"))) is None
    records = log_records(tmp_path)
    assert [r.status for r in records] == [200, 400]
    assert records[1].error_code == "invalid_request"


def test_the_conversation_header_as_a_client_sends_it() -> None:
    # Found among the raw headers whatever its case, stripped; a blank one is none; the first of two.
    ctx = chat_context("hi")
    assert given_conversation(ctx) is None
    ctx.headers = Headers(
        raw=[(b"host", b"gw"), (b"x-conversation-id", b"  chat-1 "), (b"x-conversation-id", b"b")]
    )
    assert given_conversation(ctx) == "chat-1"
    ctx.headers = Headers(raw=[(b"x-conversation-id", b"   ")])
    assert given_conversation(ctx) is None
    assert given_conversation(chat_context("hi", headers={"X-CONVERSATION-ID": "Ab:1"})) == "Ab:1"


async def test_completion_route_prompt(tmp_path: Path) -> None:
    ctx = completion_context("def add(a, b):")
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="return a + b")), content="hashed")
    [record] = log_records(tmp_path)
    assert record.pipeline == "completions" and record.content_mode == "hashed"
    assert [(m.role, m.content, m.bytes) for m in record.messages] == [
        ("user", None, 14),
        ("assistant", None, 12),
    ]
    assert record.request["prompt"]["sha256"] == record.messages[0].sha256


@pytest.mark.parametrize("mode", ["full", "hashed", "none"])
async def test_content_modes(tmp_path: Path, mode: str) -> None:
    ctx = chat_context("secret plan", assistant_turns=(), stream=False)
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="noted")), content=mode)
    [record] = log_records(tmp_path)
    user, answer = record.messages
    text = msgspec.json.encode(record).decode()
    if mode == "full":
        assert (user.content, answer.content) == ("secret plan", "noted")
    else:
        assert "secret plan" not in text and "noted" not in text
        assert user.content is None and user.bytes == len("secret plan")
        assert (user.sha256 is not None) == (mode == "hashed")
        assert record.request["messages"][0]["content"] == (
            {"sha256": user.sha256, "bytes": 11} if mode == "hashed" else {"bytes": 11})  # fmt: skip


def test_truncation_keeps_whole_characters_and_digest() -> None:
    kept = ContentPolicy("full", max_bytes=5).keep("ab😀cd")
    assert (kept.text, kept.truncated, kept.bytes) == ("ab", True, 8)
    assert ContentPolicy("full", max_bytes=8).keep("ab😀cd").text == "ab😀cd"


async def test_every_record_kept_with_its_new_turn_only(tmp_path: Path) -> None:
    for i in range(20):
        ctx = chat_context("first", f"second {i}", assistant_turns=("answer",))
        await run_stage(tmp_path, ctx, Reply(completion=Completion(content=f"reply {i}")))
    records = log_records(tmp_path)
    assert len(records) == 20 and len({r.id for r in records}) == 20
    assert [m.content for m in records[3].messages] == ["second 3", "reply 3"]


async def test_the_request_document_keeps_the_clients_json_exactly(tmp_path: Path) -> None:
    """Unset fields are left out; what the client wrote inside free-form JSON is kept, nulls included."""
    ctx = chat_context("hello")
    body = msgspec.json.decode(
        b'{"model":"phi3","messages":[{"role":"user","content":"hello","name":null}],"temperature":null,'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object",'
        b'"properties":{"x":{"type":["string","null"],"default":null}}}}}]}',
        type=ChatRequest,
    )
    ctx.request = chat_to_request(body, "phi3:latest", False)
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="hi")))
    [record] = log_records(tmp_path)
    assert record.request["messages"] == [{"role": "user", "content": "hello"}]
    assert "options" not in record.request
    schema = record.request["tools"][0]["function"]["parameters"]
    assert schema["properties"]["x"] == {"type": ["string", "null"], "default": None}


async def test_hashed_mode_keeps_no_embedding_input_or_image(tmp_path: Path) -> None:
    """Every content field of the neutral request is kept as the mode says: embedding inputs and images
    too (a native /api/embed body's `input` used to be stored whole)."""
    ctx = chat_context("x")
    ctx.request = InferenceRequest(kind="embed", model="nomic-embed-text:latest", input=["secret one", "two"])
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="")), content="hashed")
    ctx = chat_context("x")
    ctx.request = InferenceRequest(
        kind="chat", model="llava:latest", messages=[Message(role="user", content="hi", images=["SECRETIMG"])]
    )
    await run_stage(tmp_path, ctx, Reply(completion=Completion(content="")), content="hashed")
    embed, chat = log_records(tmp_path)
    text = msgspec.json.encode([embed, chat]).decode()
    assert "secret one" not in text and "SECRETIMG" not in text
    assert embed.request["input"]["bytes"] > 0 and chat.request["messages"][0]["images"]["bytes"] > 0
