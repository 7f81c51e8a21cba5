"""The fake Ollama is the ground truth of our tests: check it against the protocol doc and ollama's client."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest

from tests.fakes.ollama import Behavior, FakeOllama, embedding_vector, parse_keep_alive

ROOT = Path(__file__).resolve().parents[2]
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count")
USER = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(read_bufsize=4 * 1024 * 1024) as client:
        yield client


async def ndjson(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (await resp.text()).splitlines() if line.strip()]


async def post_lines(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with session.post(url, json=body) as resp:
        assert resp.status == 200
        return await ndjson(resp)


# ---------------------------------------------------------------------------------------------- chat/generate


async def test_chat_stream_framing_and_lines(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        raw = await resp.text()
    assert raw.endswith("}\n") and "data:" not in raw
    lines = [json.loads(line) for line in raw.splitlines()]
    *tokens, final = lines
    assert "".join(t["message"]["content"] for t in tokens) == "Hello, world!"
    for line in tokens:
        assert line["done"] is False and line["model"] == "phi3"
        assert CREATED_AT.match(line["created_at"])
        assert not set(METRICS) & line.keys() and "done_reason" not in line
        assert line["message"] == {"role": "assistant", "content": line["message"]["content"]}
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(isinstance(final[k], int) and final[k] > 0 for k in METRICS)
    assert final["eval_count"] == 4
    assert list(final)[:6] == ["model", "created_at", "message", "done_reason", "done", "total_duration"]


async def test_chat_non_stream_concatenates(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(tokens=["a", "<b>", "c"], final_content="!", thinking=["hm", "m"]))
    body = {"model": "qwen3", "messages": USER, "stream": False}
    async with session.post(f"{fake.url}/api/chat", json=body) as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        text = await resp.text()
    assert "\\u003cb\\u003e" in text  # Go's encoding/json escapes <, > and &
    obj = json.loads(text)
    assert obj["message"] == {"role": "assistant", "content": "a<b>c!", "thinking": "hmm"}
    assert obj["done"] is True and obj["eval_count"] == 5


async def test_final_line_content_can_be_non_empty(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(tokens=["Hi"], final_content="!"))
    lines = await post_lines(session, f"{fake.url}/api/chat", {"model": "phi3", "messages": USER})
    assert [line["message"]["content"] for line in lines] == ["Hi", "!"]


async def test_generate_stream_and_context(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    lines = await post_lines(session, f"{fake.url}/api/generate", {"model": "phi3", "prompt": "hi"})
    assert "".join(line["response"] for line in lines) == "Hello, world!"
    assert all("context" not in line for line in lines[:-1])
    final = lines[-1]
    assert list(final)[:6] == ["model", "created_at", "response", "done", "done_reason", "context"]
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]
    raw = await post_lines(
        session, f"{fake.url}/api/generate", {"model": "phi3", "prompt": "hi", "raw": True}
    )
    assert "context" not in raw[-1]


async def test_generate_non_stream(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    body = {
        "model": "codellama:code",
        "prompt": "def add(a, b):\n",
        "suffix": "\n    return c",
        "stream": False,
    }
    async with session.post(f"{fake.url}/api/generate", json=body) as resp:
        obj = await resp.json()
    assert obj["response"] == "Hello, world!" and obj["done"] is True and "context" in obj


async def test_load_and_unload(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": []}) as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        obj = await resp.json()
    assert obj["done_reason"] == "load" and obj["message"] == {"role": "assistant", "content": ""}
    async with session.get(f"{fake.url}/api/ps") as resp:
        assert [m["name"] for m in (await resp.json())["models"]] == ["phi3:latest"]
    async with session.post(f"{fake.url}/api/generate", json={"model": "phi3", "keep_alive": 0}) as resp:
        obj = await resp.json()
    assert obj["done_reason"] == "unload" and obj["response"] == ""
    async with session.get(f"{fake.url}/api/ps") as resp:
        assert (await resp.json()) == {"models": []}
    assert fake.streams == []


async def test_num_predict_gives_length(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    body = {"model": "phi3", "messages": USER, "options": {"num_predict": 2}}
    lines = await post_lines(session, f"{fake.url}/api/chat", body)
    assert len(lines) == 3 and lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 2


async def test_thinking_and_think_false(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.behavior = Behavior(tokens=["ok"], thinking=["let me", " see"])
    lines = await post_lines(session, f"{fake.url}/api/chat", {"model": "qwen3", "messages": USER})
    assert [line["message"].get("thinking") for line in lines] == ["let me", " see", None, None]
    assert lines[0]["message"]["content"] == ""
    body = {"model": "qwen3", "messages": USER, "think": False}
    lines = await post_lines(session, f"{fake.url}/api/chat", body)
    assert all("thinking" not in line["message"] for line in lines)
    gen = await post_lines(session, f"{fake.url}/api/generate", {"model": "qwen3", "prompt": "x"})
    assert gen[0]["thinking"] == "let me" and gen[0]["response"] == ""


async def test_tool_calls_on_final_line(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(tokens=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Tokyo"}}]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {"model": "qwen3", "messages": USER, "tools": tools}
    lines = await post_lines(session, f"{fake.url}/api/chat", body)
    assert len(lines) == 1
    (call,) = lines[0]["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}
    assert lines[0]["done_reason"] == "stop"


async def test_tool_calls_on_a_non_final_line(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    calls = [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]
    fake.next(Behavior(tokens=["t"], tool_calls=calls, tool_calls_on_final=False))
    lines = await post_lines(session, f"{fake.url}/api/chat", {"model": "qwen3", "messages": USER})
    assert [("tool_calls" in line["message"], line["done"]) for line in lines] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert [c["function"]["index"] for c in lines[1]["message"]["tool_calls"]] == [0, 1]


async def test_behavior_precedence(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.behavior = Behavior(tokens=["default"])
    fake.set_behavior("OpenChat", Behavior(tokens=["model"]))
    fake.next(Behavior(tokens=["queued"]))
    url, user = f"{fake.url}/api/chat", {"messages": USER, "stream": False}
    async with session.post(url, json={"model": "nope", **user}) as resp:
        assert resp.status == 404  # a 404 does not consume the queue
    got = []
    for model in ("phi3", "openchat", "phi3"):
        async with session.post(url, json={"model": model, **user}) as resp:
            got.append((await resp.json())["message"]["content"])
    assert got == ["queued", "model", "default"]


# ---------------------------------------------------------------------------------------------- failures


async def test_error_after_ends_with_error_line(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(error_after=2, error_message="boom"))
    lines = await post_lines(session, f"{fake.url}/api/generate", {"model": "phi3", "prompt": "x"})
    assert len(lines) == 3 and lines[-1] == {"error": "boom"}
    assert not any(line.get("done") for line in lines)
    assert fake.streams[-1].outcome == "error"


async def test_error_before_first_line_is_a_status(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(error_after=0, error_message="boom"))
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        assert (resp.status, await resp.json()) == (500, {"error": "boom"})
    fake.next(Behavior(error_status=503, error_body={"error": "server busy"}))
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        assert (resp.status, await resp.json()) == (503, {"error": "server busy"})
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    fake.next(Behavior(error_after=1))
    body = {"model": "phi3", "messages": USER, "stream": False}
    async with session.post(f"{fake.url}/api/chat", json=body) as resp:
        assert resp.status == 500


async def test_close_after_drops_the_connection(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(close_after=2))
    seen = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
            async for line in resp.content:
                seen.append(json.loads(line))
    assert len(seen) == 2 and not any(line["done"] for line in seen)
    record = fake.streams[-1]
    assert record.closed_by_fake and record.outcome == "close" and record.lines_written == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        ("POST", "/api/chat", b"", 400, {"error": "missing request body"}),
        ("POST", "/api/chat", b"xyz", 400, {"error": "invalid character 'x' looking for beginning of value"}),
        ("POST", "/api/chat", b'{"messages": []}', 400, {"error": "model is required"}),
        ("POST", "/api/generate", b'{"prompt": "x"}', 404, {"error": "model '' not found"}),
        (
            "POST",
            "/api/chat",
            b'{"model": "ghost", "messages": []}',
            404,
            {"error": "model 'ghost' not found"},
        ),
        ("POST", "/api/show", b'{"model": "ghost"}', 404, {"error": "model 'ghost' not found"}),
        ("POST", "/api/show", b"{}", 400, {"error": "model is required"}),
        ("DELETE", "/api/delete", b'{"model": "ghost"}', 404, {"error": "model 'ghost' not found"}),
        (
            "POST",
            "/api/chat",
            b'{"model": "phi3", "messages": [], "think": true}',
            400,
            {"error": '"phi3" does not support thinking'},
        ),
        (
            "POST",
            "/api/chat",
            b'{"model": "phi3", "messages": [], "tools": [{"type": "function"}]}',
            400,
            {"error": "phi3 does not support tools"},
        ),
        (
            "POST",
            "/api/generate",
            b'{"model": "phi3", "prompt": "a", "suffix": "b"}',
            400,
            {"error": "phi3:latest does not support insert"},
        ),
        (
            "POST",
            "/api/generate",
            b'{"model": "phi3", "prompt": "a", "raw": true, "system": "s"}',
            400,
            {"error": "raw mode does not support template, system, or context"},
        ),
        (
            "POST",
            "/api/chat",
            b'{"model": "nomic-embed-text", "messages": []}',
            400,
            {"error": '"nomic-embed-text" does not support chat'},
        ),
        (
            "POST",
            "/api/chat",
            b'{"model": "phi3", "messages": [], "keep_alive": "3600"}',
            400,
            {"error": 'time: missing unit in duration "3600"'},
        ),
        (
            "POST",
            "/api/embed",
            b'{"model": "nomic-embed-text", "input": [1]}',
            400,
            {"error": "invalid input type"},
        ),
    ],
)
async def test_json_errors(
    fake: FakeOllama,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    body: bytes,
    status: int,
    expected: dict[str, str],
) -> None:
    async with session.request(method, fake.url + path, data=body) as resp:
        assert resp.status == status
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await resp.json() == expected


@pytest.mark.parametrize(
    ("method", "path", "status", "text"),
    [
        ("GET", "/api/nothing", 404, "404 page not found"),
        ("GET", "/api/chat", 405, "405 method not allowed"),
        ("POST", "/api/tags", 405, "405 method not allowed"),
        ("GET", "/v2/models", 404, "404 page not found"),
    ],
)
async def test_router_answers_are_plain_text(
    fake: FakeOllama, session: aiohttp.ClientSession, method: str, path: str, status: int, text: str
) -> None:
    async with session.request(method, fake.url + path) as resp:
        assert (resp.status, resp.headers["Content-Type"], await resp.text()) == (status, "text/plain", text)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example.com"},
        {"Host": "api.example.com"},
        {"Host": "api.example.com:443"},
        {"Origin": "http://localhost.evil.com"},
    ],
)
async def test_host_and_origin_checks_give_empty_403(
    fake: FakeOllama, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with session.post(
        f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}, headers=headers
    ) as r:
        assert (r.status, await r.read()) == (403, b"")
    assert fake.streams == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost:3000"},
        {"Origin": "vscode-webview://abc"},
        {"Host": "localhost:11434"},
        {"Host": "10.0.0.5:11434"},
        {"Host": "box.internal"},
        {"Host": "[::1]:80"},
    ],
)
async def test_local_hosts_and_origins_pass(
    fake: FakeOllama, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with session.get(f"{fake.url}/api/version", headers=headers) as resp:
        assert (resp.status, await resp.json()) == (200, {"version": "0.33.0-rc2"})


def test_keep_alive_forms() -> None:
    assert parse_keep_alive(None) is None
    assert parse_keep_alive(3600) == 3600 and parse_keep_alive(1.5) == 1.5
    assert parse_keep_alive("1h30m") == 5400 and parse_keep_alive("-1m") == -60 and parse_keep_alive("0") == 0
    assert parse_keep_alive("250ms") == 0.25


# -------------------------------------------------------------------------------------- timing, wire shape


async def test_nothing_is_sent_before_the_first_token(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.next(Behavior(first_token_delay_s=0.6))
    request = asyncio.create_task(
        session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER})
    )
    await asyncio.sleep(0.2)
    assert not request.done() and fake.streams[-1].headers_sent is False
    async with await request as resp:
        assert len(await ndjson(resp)) == 5


async def test_disconnect_is_noticed_quickly(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior.counted(200, token_delay_s=0.05))
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        await resp.content.readline()
        record = fake.streams[-1]
        resp.close()
    await asyncio.wait_for(record.disconnect_event.wait(), 1)
    assert record.disconnected and record.outcome == "disconnect" and not record.completed
    assert record.lines_written < 200 and record.disconnected_at is not None
    await asyncio.wait_for(record.finished.wait(), 1)


async def test_disconnect_before_first_token(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(first_token_delay_s=30))
    request = asyncio.create_task(
        session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER})
    )
    (record,) = await fake.wait_streams(1)
    request.cancel()
    await asyncio.wait_for(record.disconnect_event.wait(), 1)
    assert record.lines_written == 0 and not record.headers_sent


async def test_backpressure_blocks_the_writer(fake: FakeOllama) -> None:
    token = "y" * 65536
    fake.next(Behavior(tokens=[token] * 400))  # about 27 MB, far beyond the socket buffers
    async with (
        aiohttp.ClientSession(read_bufsize=65536) as session,
        session.post(f"{fake.url}/api/generate", json={"model": "phi3", "prompt": "x"}) as resp,
    ):
        assert resp.status == 200
        record = fake.streams[-1]
        stalled = 0
        for _ in range(200):
            before = record.bytes_written
            await asyncio.sleep(0.02)
            stalled = stalled + 1 if record.bytes_written == before and record.writing else 0
            if stalled >= 5:
                break
        assert stalled >= 5 and record.bytes_written < 400 * len(token)
        resp.close()
    await asyncio.wait_for(record.disconnect_event.wait(), 1)


async def test_big_line(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior(tokens=["a", "b"], big_line_bytes=1_000_000, big_line_index=1))
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        raw = (await resp.read()).split(b"\n")
    assert 999_000 <= len(raw[1]) + 1 <= 1_001_000
    assert json.loads(raw[1])["message"]["content"].startswith("bxxx")


async def test_split_writes_split_lines_across_reads(
    fake: FakeOllama, session: aiohttp.ClientSession
) -> None:
    fake.next(Behavior(tokens=["alpha", "beta"], split_writes=4))
    pieces = []
    async with session.post(f"{fake.url}/api/chat", json={"model": "phi3", "messages": USER}) as resp:
        async for data, _ in resp.content.iter_chunks():
            pieces.append(data)
    assert any(not piece.endswith(b"\n") for piece in pieces)
    assert [json.loads(line)["message"]["content"] for line in b"".join(pieces).splitlines()] == [
        "alpha",
        "beta",
        "",
    ]


async def test_tokens_per_write_batches_lines(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    fake.next(Behavior.counted(64, tokens_per_write=65))
    async with session.post(f"{fake.url}/api/generate", json={"model": "phi3", "prompt": "x"}) as resp:
        chunks = [data async for data, _ in resp.content.iter_chunks()]
    lines = b"".join(chunks).splitlines()
    assert len(lines) == 65 and json.loads(lines[-1])["done"] is True
    assert fake.streams[-1].lines_written == 65 and fake.streams[-1].bytes_written == len(b"".join(chunks))


async def test_requests_are_recorded(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    await post_lines(session, f"{fake.url}/api/chat", {"model": "phi3", "messages": USER})
    async with session.get(f"{fake.url}/api/tags", headers={"X-Test": "1"}):
        pass
    method, path, body, _ = fake.requests[0]
    assert (method, path, body["model"]) == ("POST", "/api/chat", "phi3")
    assert fake.requests[1].headers["X-Test"] == "1"
    assert fake.count("/api/chat") == 1 and fake.count("/api/tags", "GET") == 1


# ---------------------------------------------------------------------------------------------- embeddings


async def test_embed(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    body = {"model": "nomic-embed-text", "input": ["a", "b"]}
    async with session.post(f"{fake.url}/api/embed", json=body) as resp:
        obj = await resp.json()
    assert obj["model"] == "nomic-embed-text" and obj["prompt_eval_count"] == 2
    a, b = obj["embeddings"]
    assert len(a) == 768 and a != b and math.isclose(math.fsum(v * v for v in a), 1.0, rel_tol=1e-6)
    assert a == embedding_vector("nomic-embed-text:latest", "a", 768)
    body = {"model": "nomic-embed-text", "input": "a", "dimensions": 8}
    async with session.post(f"{fake.url}/api/embed", json=body) as resp:
        (short,) = (await resp.json())["embeddings"]
    assert len(short) == 8 and math.isclose(math.fsum(v * v for v in short), 1.0, rel_tol=1e-6)
    async with session.post(f"{fake.url}/api/embed", json={"model": "nomic-embed-text"}) as resp:
        assert await resp.json() == {"model": "nomic-embed-text", "embeddings": []}
    assert fake.embed_inputs == ["a", "b", "a"] and fake.embed_input_count == 3


async def test_embed_truncate(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    long = "word " * 5000
    body = {"model": "nomic-embed-text", "input": long, "truncate": False}
    async with session.post(f"{fake.url}/api/embed", json=body) as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {"error": "the input length exceeds the context length"},
        )
    async with session.post(f"{fake.url}/api/embed", json={**body, "truncate": True}) as resp:
        assert (await resp.json())["prompt_eval_count"] == 2048


async def test_old_embeddings_endpoint(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    body = {"model": "nomic-embed-text", "prompt": "hello"}
    async with session.post(f"{fake.url}/api/embeddings", json=body) as resp:
        obj = await resp.json()
    assert list(obj) == ["embedding"] and len(obj["embedding"]) == 768
    async with session.post(
        f"{fake.url}/api/embeddings", json={"model": "nomic-embed-text", "prompt": ""}
    ) as r:
        assert await r.json() == {"embedding": []}


# ---------------------------------------------------------------------------------------------- management


async def test_health_version_tags_show(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    async with session.get(fake.url) as resp:
        assert (resp.status, await resp.text()) == (200, "Ollama is running")
    async with session.head(fake.url) as resp:
        assert (resp.status, await resp.read()) == (200, b"")
    async with session.head(f"{fake.url}/api/tags") as resp:
        assert resp.status == 200
    async with session.get(f"{fake.url}/api/tags") as resp:
        models = (await resp.json())["models"]
    assert models[0]["name"] == "phi3:latest" and models[0]["model"] == "phi3:latest"
    assert re.fullmatch(r"[0-9a-f]{64}", models[0]["digest"]) and models[0]["details"]["format"] == "gguf"
    assert [m["modified_at"] for m in models] == sorted((m["modified_at"] for m in models), reverse=True)
    async with session.post(f"{fake.url}/api/show", json={"name": "CodeLlama:code"}) as resp:
        show = await resp.json()
    assert show["capabilities"] == ["completion", "insert"]
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] == 4096


async def test_model_names_are_case_insensitive(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    for name in ("PHI3", "phi3:latest", "registry.ollama.ai/library/phi3:latest"):
        async with session.post(f"{fake.url}/api/chat", json={"model": name, "messages": []}) as resp:
            assert (await resp.json())["model"] == name


async def test_delete(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    async with session.delete(f"{fake.url}/api/delete", json={"model": "openchat"}) as resp:
        assert (resp.status, await resp.read()) == (200, b"")
    async with session.delete(f"{fake.url}/api/delete", json={"model": "openchat"}) as resp:
        assert resp.status == 404


async def test_pull_stream_and_errors(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    lines = await post_lines(session, f"{fake.url}/api/pull", {"model": "llama3.2"})
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    assert any(line.get("completed") == line.get("total") and "digest" in line for line in lines)
    assert "llama3.2:latest" in fake.models
    lines = await post_lines(session, f"{fake.url}/api/pull", {"model": "no-such-model"})
    assert lines == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    async with session.post(f"{fake.url}/api/pull", json={"model": "tinyllama", "stream": False}) as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "success"})
    async with session.post(f"{fake.url}/api/pull", json={"model": "nope", "stream": False}) as resp:
        assert resp.status == 500


async def test_pull_goes_on_after_the_client_leaves(session: aiohttp.ClientSession) -> None:
    async with FakeOllama(pull_step_delay_s=0.05) as fake:
        async with session.post(f"{fake.url}/api/pull", json={"model": "tinyllama"}) as resp:
            await resp.content.readline()
            resp.close()
        record = fake.pulls[-1]
        await asyncio.wait_for(record.done.wait(), 5)
        assert record.completed and record.client_disconnected
        assert "tinyllama:latest" in fake.models


# ---------------------------------------------------------------------------------------------- ollama client


async def test_official_client(fake: FakeOllama) -> None:
    client = ollama.AsyncClient(host=fake.url)
    reply = await client.chat(model="phi3", messages=USER)
    assert reply.message.content == "Hello, world!" and reply.done_reason == "stop" and reply.eval_count == 4
    parts = [part async for part in await client.chat(model="phi3", messages=USER, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "Hello, world!" and parts[-1].done
    gen = await client.generate(model="phi3", prompt="hi")
    assert gen.response == "Hello, world!" and gen.context
    fake.next(Behavior(tokens=[], tool_calls=[{"name": "f", "arguments": {"a": 1}}]))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    reply = await client.chat(model="qwen3", messages=USER, tools=tools)
    assert reply.message.tool_calls and reply.message.tool_calls[0].function.arguments == {"a": 1}
    emb = await client.embed(model="nomic-embed-text", input=["x", "y"])
    assert len(emb.embeddings) == 2
    assert {m.model for m in (await client.list()).models} >= {"phi3:latest", "nomic-embed-text:latest"}
    show = await client.show("qwen3")
    assert "thinking" in (show.capabilities or [])
    assert {m.model for m in (await client.ps()).models} >= {"phi3:latest", "qwen3:latest"}
    progress = [p async for p in await client.pull("tinyllama", stream=True)]
    assert progress[-1].status == "success"
    assert (await client.pull("tinyllama")).status == "success"
    await client.delete("tinyllama")
    with pytest.raises(ollama.ResponseError) as caught:
        await client.delete("tinyllama")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model="ghost", messages=USER)
    assert caught.value.error == "model 'ghost' not found"


# -------------------------------------------------------------------------------------- standalone servers


async def start_process(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, "--port", "0", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    assert url.startswith("http://127.0.0.1:")
    return proc, url


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), 10)


async def test_standalone_fake(session: aiohttp.ClientSession) -> None:
    proc, url = await start_process("tests.fakes.ollama", "--tokens", "3", "--token-delay-ms", "1")
    try:
        lines = await post_lines(session, f"{url}/api/chat", {"model": "phi3", "messages": USER})
        assert "".join(line["message"]["content"] for line in lines) == "w0 w1 w2 "
    finally:
        await stop_process(proc)


@pytest.mark.parametrize("delay", ["0", "2"])
async def test_bench_fake(session: aiohttp.ClientSession, delay: str) -> None:
    proc, url = await start_process("bench.fake_ollama", "--tokens", "64", "--token-delay-ms", delay)
    try:
        async with session.post(f"{url}/api/chat", json={"model": "m", "messages": USER}) as resp:
            assert resp.headers["Content-Type"] == "application/x-ndjson"
            chunks = [data async for data, _ in resp.content.iter_chunks()]
        lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
        assert len(lines) == 65 and lines[-1]["done"] is True and lines[-1]["eval_count"] == 64
        assert all(CREATED_AT.match(line["created_at"]) and line["model"] == "m" for line in lines)
        assert "".join(line["message"]["content"] for line in lines) == "".join(f"w{i} " for i in range(64))
        if delay == "0":
            assert len(chunks) == 1  # the whole stream in one write
        body = {"model": "m", "prompt": "x", "stream": False, "options": {"num_predict": 5}}
        async with session.post(f"{url}/api/generate", json=body) as resp:
            obj = await resp.json()
        assert obj["response"] == "w0 w1 w2 w3 w4 " and obj["done_reason"] == "stop"
        async with session.post(f"{url}/api/embed", json={"model": "e", "input": ["a", "b"]}) as resp:
            assert len((await resp.json())["embeddings"]) == 2
    finally:
        await stop_process(proc)
