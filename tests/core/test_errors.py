"""Every error a client can cause or meet comes back as OpenAI's error object with the right status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import openai
import pytest

from citadel_proxy import errors
from tests.core.conftest import (
    AUTH,
    CHAT,
    REPO,
    TEST_KEY,
    Gateway,
    free_port,
    running_gateway,
    stream_text,
    write_config,
)
from tests.fakes.ollama import Behavior, FakeOllama


async def call(gw: Gateway, method: str, path: str, **kwargs: object) -> tuple[int, dict[str, object], str]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.request(method, gw.url + path, **kwargs) as response,
    ):  # type: ignore[arg-type]
        text = await response.text()
        assert response.content_type == "application/json", text
        return response.status, json.loads(text)["error"], response.headers.get("Allow", "")


def assert_error_shape(error: dict[str, object]) -> None:
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in str(error["message"])


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"", 400, "invalid_request", None),
        (b"[1, 2]", 400, "invalid_request", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "invalid_request", None),
        (json.dumps({"model": "phi3", "messages": []}).encode(), 400, "invalid_request", "messages"),
        (json.dumps({"model": "phi3", "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400,
         "invalid_request", "messages[0].role"),
        (json.dumps({**CHAT, "temperature": 9}).encode(), 400, "invalid_request", "temperature"),
        (json.dumps({**CHAT, "n": 3}).encode(), 400, "unsupported_parameter", "n"),
        (json.dumps({**CHAT, "model": "llama9"}).encode(), 404, "model_not_found", "model"),
    ],
)  # fmt: skip
async def test_bad_requests(gateway: Gateway, body: bytes, status: int, code: str, param: str | None) -> None:
    got_status, error, _ = await call(gateway, "POST", "/v1/chat/completions", data=body)
    assert (got_status, error["code"]) == (status, code), error
    if param is not None:
        assert error["param"] == param
    assert_error_shape(error)


async def test_route_method_and_size_errors(gateway: Gateway) -> None:
    status, error, _ = await call(gateway, "GET", "/v1/nothing-here")
    assert (status, error["type"]) == (404, "not_found_error")
    status, error, allow = await call(gateway, "GET", "/v1/chat/completions")
    assert status == 405 and "POST" in allow
    big = b'{"model":"phi3","messages":[{"role":"user","content":"' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    status, error, _ = await call(gateway, "POST", "/v1/chat/completions", data=big)
    assert (status, error["code"]) == (413, "payload_too_large")


async def test_sdk_raises_typed_errors(gateway: Gateway) -> None:
    oai = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await oai.chat.completions.create(model="llama9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="phi3", messages=[{"role": "user", "content": "x"}], n=2)


async def test_model_configured_but_missing_in_ollama_is_404(gateway: Gateway) -> None:
    body = {**CHAT, "model": "configured-not-pulled"}
    status, error, _ = await call(gateway, "POST", "/v1/chat/completions", json=body)
    assert status == 404 and "not found" in str(error["message"])
    # A stream refused by Ollama before its first byte keeps its real status too.
    status, error, _ = await call(gateway, "POST", "/v1/voice/chat/completions", json=body)
    assert status == 404


async def test_ollama_errors_before_streaming(gateway: Gateway) -> None:
    gateway.fake.next(Behavior(error_status=503, error_body={"error": "server busy, please try again."}))
    status, error, _ = await call(gateway, "POST", "/v1/chat/completions", json=CHAT)
    assert (status, error["code"]) == (503, "upstream_busy")
    gateway.fake.next(
        Behavior(error_status=500, error_body={"error": "model runner has unexpectedly stopped"})
    )
    status, error, _ = await call(gateway, "POST", "/v1/chat/completions", json=CHAT)
    assert status == 502 and "unexpectedly stopped" in str(error["message"])
    gateway.fake.next(Behavior(error_status=400, error_body={"error": '"phi3" does not support thinking'}))
    status, error, _ = await call(
        gateway, "POST", "/v1/chat/completions", json={**CHAT, "reasoning_effort": "high"}
    )
    assert status == 400 and "does not support thinking" in str(error["message"])


async def test_error_in_the_middle_of_a_stream_becomes_an_sse_error_event(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(5, error_after=3))
    status, text = await stream_text(gateway, "/v1/voice/chat/completions", CHAT)
    events = [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]
    assert status == 200 and len(events) == 4 and "[DONE]" not in text
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_error" and "fake failure" in error["message"]
    assert_error_shape(error)


async def test_sdk_sees_a_mid_stream_error(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(5, error_after=2))
    oai = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TEST_KEY, max_retries=0)
    stream = await oai.chat.completions.create(
        model="phi3", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="fake failure"):
        async for _chunk in stream:
            pass


async def test_upstream_closing_early_is_upstream_incomplete(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(5, close_after=2))
    _, text = await stream_text(gateway, "/v1/voice/chat/completions", CHAT)
    last = [e for e in text.split("\n\n") if e.startswith("data: ")][-1]
    assert json.loads(last[len("data: ") :])["error"]["code"] == "upstream_incomplete"


async def test_upstream_unreachable_is_502_and_health_503(tmp_path: Path) -> None:
    fake = FakeOllama()
    config = write_config(tmp_path, free_port(), REPO / "pipelines")
    async with running_gateway(config, fake) as gw:
        status, error, _ = await call(gw, "POST", "/v1/chat/completions", json=CHAT)
        assert (status, error["code"]) == (502, "upstream_unavailable")
        status, _ = await stream_text(gw, "/v1/voice/chat/completions", CHAT)
        assert status == 502
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(gw.url + "/health") as response,
        ):
            assert response.status == 503 and (await response.json())["checks"]["ollama"]["status"] == "down"


async def test_deadlines(tmp_path: Path, custom_pipelines: Path) -> None:
    async with (
        FakeOllama() as fake,
        running_gateway(write_config(tmp_path, fake.port, custom_pipelines), fake) as gw,
    ):
        # Mid-stream: an SSE error event with code timeout, and the upstream request is closed.
        fake.next(Behavior.counted(50, token_delay_s=0.1))
        status, text = await stream_text(gw, "/v1/fast", CHAT)
        last = [e for e in text.split("\n\n") if e.startswith("data: ")][-1]
        assert status == 200 and json.loads(last[len("data: ") :])["error"]["code"] == "timeout"
        record = fake.streams[-1]
        assert record.lines_written < 50
        # Before any answer, non-streaming: 504.
        fake.next(Behavior.counted(2, first_token_delay_s=3))
        status, error, _ = await call(gw, "POST", "/v1/fastplain", json=CHAT)
        assert (status, error["code"]) == (504, "timeout")


async def test_deadline_while_the_model_loads_ends_the_kept_alive_stream(
    tmp_path: Path, custom_pipelines: Path
) -> None:
    async with (
        FakeOllama() as fake,
        running_gateway(write_config(tmp_path, fake.port, custom_pipelines), fake) as gw,
    ):
        fake.next(Behavior.counted(2, first_token_delay_s=5))  # /v1/fast's deadline is 1 s
        status, text = await stream_text(gw, "/v1/fast", CHAT)
        assert status == 200 and text.startswith(": keep-alive\n\n")
        events = [e for e in text.split("\n\n") if e.startswith("data: ")]
        assert len(events) == 1 and json.loads(events[0][len("data: ") :])["error"]["code"] == "timeout"
        record = (await fake.wait_streams(1))[-1]
        await asyncio.wait_for(record.disconnect_event.wait(), timeout=1.0)  # Ollama was let go


async def test_ollama_silent_past_its_timeout_is_upstream_timeout(fake: FakeOllama, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    config.write_text(
        config.read_text().replace("connect_timeout_s: 2}", "connect_timeout_s: 2, timeout: 0.3}")
    )
    async with running_gateway(config, fake) as gw:
        fake.next(Behavior.counted(2, first_token_delay_s=3))
        status, error, _ = await call(gw, "POST", "/v1/chat/completions", json=CHAT)
        assert (status, error["code"]) == (504, "upstream_timeout")
        fake.next(Behavior.counted(2, first_token_delay_s=3))
        status, text = await stream_text(gw, "/v1/chat/completions", {**CHAT, "stream": True})
        [event] = [e for e in text.split("\n\n") if e.startswith("data: ")]
        assert status == 200 and json.loads(event[len("data: ") :])["error"]["code"] == "upstream_timeout"


async def test_keys_are_checked_before_the_body_is_read(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=b"{not json") as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert (await response.json())["error"]["type"] == "authentication_error"
        async with session.get(gateway.url + "/v1/models") as response:
            assert response.status == 401
        bad = {"Authorization": "Bearer cit_not-a-real-key"}
        async with session.post(
            gateway.url + "/v1/voice/chat/completions", json=CHAT, headers=bad
        ) as response:
            assert response.status == 401
        async with session.get(gateway.url + "/management/system/resources") as response:
            assert response.status == 401
    assert gateway.fake.count("/api/chat") == 0


def test_a_reason_without_text_names_the_exception() -> None:
    # asyncio.timeout raises a bare TimeoutError(): "cannot connect ...: " must not end in nothing.
    assert errors.reason(TimeoutError()) == "TimeoutError"
    assert errors.reason(OSError(111, "Connection refused")) == "[Errno 111] Connection refused"
