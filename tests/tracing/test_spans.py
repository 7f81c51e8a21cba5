"""Traces of real requests, as an OTLP receiver decodes them: spans, attributes, parent links, and the
traceparent that reaches Ollama."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.core.conftest import AUTH, TEST_KEY
from tests.fakes.ollama import FakeOllama
from tests.fakes.ollama.behavior import Behavior
from tests.tracing.conftest import EMBED_MODEL, traced_gateway
from tests.tracing.receiver import GrpcReceiver, HttpReceiver, Received, attributes

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT = "my secret prompt about the moon"


@pytest.fixture
async def fake() -> Any:
    async with FakeOllama() as server:
        yield server


async def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(headers={**AUTH, **(headers or {})}) as session,
        session.post(url, json=body) as response,
    ):
        return response.status, await response.read()


def on(receiver: HttpReceiver, more: str = "enabled: true") -> str:
    """monitoring.tracing sending to `receiver`, with `more` settings."""
    return f"{{endpoint: '{receiver.endpoint}', {more}}}"


def chat(stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": "phi3", "messages": [{"role": "user", "content": PROMPT}], "stream": stream, **extra}


def only(spans: list[Span]) -> Span:
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def every_value(received: Received) -> str:
    return json.dumps([attributes(span.attributes) for span in received.spans], default=str)


async def test_streamed_chat(tmp_path: Path, fake: FakeOllama, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="citadel.access")
    async with HttpReceiver() as receiver:
        tracing = on(receiver)
        async with traced_gateway(tmp_path, fake, tracing) as gateway:
            status, body = await post(
                gateway.url + "/v1/chat/completions",
                chat(True, temperature=0),
                {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "X-Conversation-ID": "voice-42"},
            )
            assert status == 200 and b"[DONE]" in body
        received = receiver.received

    root = only(list(received.roots()))
    assert root.name == "chat phi3"
    assert root.trace_id.hex() == CLIENT_TRACE and root.parent_span_id.hex() == CLIENT_SPAN
    got = attributes(root.attributes)
    assert got["gen_ai.operation.name"] == "chat" and got["gen_ai.system"] == "ollama"
    assert got["gen_ai.request.model"] == "phi3" and got["gen_ai.response.model"] == "phi3:latest"
    assert got["gen_ai.usage.input_tokens"] > 0 and got["gen_ai.usage.output_tokens"] == 4
    assert got["gen_ai.response.finish_reasons"] == ["stop"]
    assert got["citadel.pipeline"] == "chat" and got["citadel.key"] == "tester"
    assert got["session.id"] == "voice-42" and got["http.response.status_code"] == 200
    assert got["citadel.stream"] is True and "citadel.cache_hit" not in got
    # The backend that served, as on its attempt's span; the resource's attributes are not repeated.
    assert got["server.address"] == "127.0.0.1" and got["server.port"] == fake.port
    assert "service.name" not in got
    assert received.resources[0]["service.name"] == "citadel-test"

    # Keys from the config, rate limit and cache in the worker, audit into its queue: none of them
    # waits. The conversation's owner is asked of the audit's SQLite (in a thread): that waits.
    children = {span.name: span for span in received.children(root)}
    assert set(children) == {"conversation claim", "chat phi3:latest"}
    for span in children.values():
        assert span.trace_id == root.trace_id
        assert root.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano
    upstream = children["chat phi3:latest"]
    assert upstream.kind == Span.SPAN_KIND_CLIENT and upstream.status.code == Status.STATUS_CODE_UNSET
    assert attributes(upstream.attributes) == {"server.address": "127.0.0.1", "server.port": fake.port}
    first = only([event for event in upstream.events if event.name == "first_token"])
    assert upstream.start_time_unix_nano <= first.time_unix_nano <= upstream.end_time_unix_nano

    # Ollama was told the trace, with the upstream span as its parent.
    sent = only([r for r in fake.requests if r.path == "/api/chat"]).headers
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{upstream.span_id.hex()}-01"

    # No content unless capture_content, and never the key.
    values = every_value(received)
    assert PROMPT not in values and "Hello" not in values and TEST_KEY not in values

    line = json.loads(only([r for r in caplog.records if r.name == "citadel.access"]).getMessage())
    assert line["trace_id"] == CLIENT_TRACE and line["span_id"] == root.span_id.hex()


async def test_embeddings(tmp_path: Path, fake: FakeOllama) -> None:
    async with HttpReceiver() as receiver:
        async with traced_gateway(tmp_path, fake, on(receiver)) as gw:
            body = {"model": "nomic-embed-text", "input": ["a", "b"]}
            status, _ = await post(gw.url + "/v1/embeddings", body)
            assert status == 200
        received = receiver.received
    root = only(list(received.roots()))
    assert root.name == "embeddings nomic-embed-text" and not root.parent_span_id
    got = attributes(root.attributes)
    assert got["gen_ai.operation.name"] == "embeddings" and got["gen_ai.response.model"] == EMBED_MODEL
    assert got["gen_ai.usage.input_tokens"] > 0 and "gen_ai.usage.output_tokens" not in got
    children = {span.name: span for span in received.children(root)}
    assert set(children) == {f"embeddings {EMBED_MODEL}"}
    upstream = children[f"embeddings {EMBED_MODEL}"]
    sent = only([r for r in fake.requests if r.path == "/api/embed"]).headers
    assert sent["traceparent"] == f"00-{root.trace_id.hex()}-{upstream.span_id.hex()}-01"


async def test_failed_attempt_is_an_error(tmp_path: Path, fake: FakeOllama) -> None:
    fake.next(Behavior(error_status=500, error_body={"error": "the runner crashed"}))
    async with HttpReceiver() as receiver:
        async with traced_gateway(tmp_path, fake, on(receiver)) as gw:
            status, _ = await post(gw.url + "/v1/chat/completions", chat(False))
            assert status == 502
        received = receiver.received
    root = only(list(received.roots()))
    assert root.status.code == Status.STATUS_CODE_ERROR
    assert attributes(root.attributes)["http.response.status_code"] == 502
    upstream = only(received.named("chat phi3:latest"))
    assert upstream.parent_span_id == root.span_id
    assert upstream.status.code == Status.STATUS_CODE_ERROR and "runner crashed" in upstream.status.message
    assert attributes(upstream.attributes)["error.type"]


async def test_content_only_when_captured(tmp_path: Path, fake: FakeOllama) -> None:
    async with HttpReceiver() as receiver:
        tracing = f"{{enabled: true, endpoint: '{receiver.endpoint}', capture_content: true}}"
        async with traced_gateway(tmp_path, fake, tracing) as gw:
            assert (await post(gw.url + "/v1/chat/completions", chat(True)))[0] == 200
            assert (await post(gw.url + "/v1/chat/completions", chat(False)))[0] == 200
        received = receiver.received
    roots = list(received.roots())
    assert len(roots) == 2
    for root in roots:
        got = attributes(root.attributes)
        assert PROMPT in json.loads(got["gen_ai.input.messages"])[0]["parts"][0]["content"]
        output = json.loads(got["gen_ai.output.messages"])[0]
        assert output["role"] == "assistant" and output["parts"][0]["content"] == "Hello, world!"


async def test_disabled_sends_and_passes_on_nothing(
    tmp_path: Path, fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="citadel.access")
    async with HttpReceiver() as receiver:
        async with traced_gateway(tmp_path, fake, on(receiver, "enabled: false")) as gw:
            header = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
            assert (await post(gw.url + "/v1/chat/completions", chat(True), header))[0] == 200
        assert receiver.received.requests == 0
    assert "traceparent" not in only([r for r in fake.requests if r.path == "/api/chat"]).headers
    line = json.loads(only([r for r in caplog.records if r.name == "citadel.access"]).getMessage())
    assert "trace_id" not in line and "span_id" not in line


async def test_refused_request_and_sampling(tmp_path: Path, fake: FakeOllama) -> None:
    """A refusal is a span too; at ratio 0 only requests whose client sampled them are traced."""
    async with HttpReceiver() as receiver:
        tracing = f"{{enabled: true, endpoint: '{receiver.endpoint}', sample_ratio: 0}}"
        async with traced_gateway(tmp_path, fake, tracing) as gw:
            assert (await post(gw.url + "/v1/chat/completions", chat(False)))[0] == 200
            sampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "Authorization": "Bearer nope"}
            assert (await post(gw.url + "/v1/chat/completions", chat(False), sampled))[0] == 401
        received = receiver.received
    root = only(list(received.roots()))
    assert root.name == "refused /v1/chat/completions" and root.trace_id.hex() == CLIENT_TRACE
    got = attributes(root.attributes)
    assert got["http.response.status_code"] == 401 and got["error.type"]
    assert "nope" not in every_value(received)
    # The unsampled request still told Ollama its trace, marked not sampled.
    assert only([r for r in fake.requests if r.path == "/api/chat"]).headers["traceparent"].endswith("-00")


async def test_grpc(tmp_path: Path, fake: FakeOllama) -> None:
    with GrpcReceiver() as receiver:
        tracing = f"{{enabled: true, protocol: grpc, endpoint: '{receiver.endpoint}'}}"
        async with traced_gateway(tmp_path, fake, tracing) as gw:
            assert (await post(gw.url + "/v1/chat/completions", chat(False)))[0] == 200
        received = receiver.received
    root = only(list(received.roots()))
    assert root.name == "chat phi3"
    assert only(received.named("chat phi3:latest")).parent_span_id == root.span_id


async def test_every_protocol_route_is_traced(tmp_path: Path, fake: FakeOllama) -> None:
    """Ollama's own API, Anthropic's and the Responses API reach the same spans as OpenAI's routes."""
    async with HttpReceiver() as receiver:
        async with traced_gateway(tmp_path, fake, on(receiver)) as gw:
            native = {"model": "phi3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
            assert (await post(gw.url + "/api/chat", native))[0] == 200
            messages = {"model": "phi3", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
            assert (await post(gw.url + "/v1/messages", messages))[0] == 200
            assert (await post(gw.url + "/v1/responses", {"model": "phi3", "input": "hi"}))[0] == 200
        received = receiver.received
    roots = list(received.roots())
    assert len(roots) == 3, [span.name for span in roots]
    for root in roots:
        children = {span.name for span in received.children(root)}
        assert children == {"chat phi3:latest"}, children


async def test_stages_that_wait_have_spans(
    tmp_path: Path, fake: FakeOllama, redis_url: str, redis_prefix: str
) -> None:
    """With Redis, the rate limit and the cache lookup wait for it: a child span each, the lookup ended
    before the call to Ollama (a miss) starts; a hit has no call to Ollama."""
    parsed = urlparse(redis_url)
    redis = (
        f"redis: {{host: {parsed.hostname}, port: {parsed.port or 6379}, "
        f"database: {parsed.path.lstrip('/') or 0}, key_prefix: '{redis_prefix}'}}"
    )
    async with HttpReceiver() as receiver:
        async with traced_gateway(tmp_path, fake, on(receiver), redis) as gw:
            for _ in range(2):  # a miss, then a hit
                assert (await post(gw.url + "/v1/chat/completions", chat(False, temperature=0)))[0] == 200
        received = receiver.received
    miss, hit = sorted(received.roots(), key=lambda span: span.start_time_unix_nano)
    children = {span.name: span for span in received.children(miss)}
    assert set(children) == {"rate limit", "cache lookup", "chat phi3:latest"}
    lookup, upstream = children["cache lookup"], children["chat phi3:latest"]
    assert lookup.kind == Span.SPAN_KIND_INTERNAL and lookup.trace_id == miss.trace_id
    assert miss.start_time_unix_nano <= lookup.start_time_unix_nano <= lookup.end_time_unix_nano
    assert lookup.end_time_unix_nano <= upstream.start_time_unix_nano
    assert attributes(hit.attributes)["citadel.cache_hit"] is True
    names = {span.name for span in received.children(hit)}
    assert "cache lookup" in names and "chat phi3:latest" not in names, names
