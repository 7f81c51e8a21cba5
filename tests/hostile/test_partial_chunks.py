"""Tokens held for a chunk when Ollama fails still reach the client, before the error event (issue 12: 8)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.core.conftest import CHAT, REPO, Gateway, running_gateway, stream_text, write_config
from tests.fakes.ollama import Behavior, FakeOllama

PROMPT = {"model": "coder", "prompt": "def add(a, b):\n"}
# Every chunked route of the shipped pipelines, with a request in its format and its tokens per event.
ROUTES = [
    ("/v1/gui/chat/completions", CHAT),
    ("/v1/copilot/completions", PROMPT),
    ("/v1/voice/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/completions", {**PROMPT, "stream": True}),
    ("/v1/agents/stream?type=research", CHAT),
]


@pytest.fixture(params=["uvicorn", "hypercorn"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with FakeOllama() as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines")
        async with running_gateway(config, fake, server=request.param) as gateway:
            yield gateway


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(e[len("data: ") :]) for e in text.split("\n\n") if e.startswith("data: {")]


def _text(events: list[dict[str, object]]) -> str:
    out = []
    for event in events:
        for choice in event.get("choices", []):  # type: ignore[attr-defined]
            out.append(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
    return "".join(out)


@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_tokens_before_a_failure_go_out_before_the_error_event(
    gw: Gateway, path: str, body: dict[str, object]
) -> None:
    failures = [Behavior.counted(20, tokens_per_write=n, error_after=3) for n in (1, 10)]
    failures += [Behavior.counted(20, tokens_per_write=n, close_after=3) for n in (1, 10)]
    for behavior in failures:
        gw.fake.next(behavior)
        status, text = await stream_text(gw, path, body)
        events = _events(text)
        assert status == 200 and "data: [DONE]" not in text
        assert "error" in events[-1], text
        # Before: the gui and copilot routes lost the three tokens held for their chunk of ten and five.
        assert _text(events[:-1]) == "w0 w1 w2 ", text
