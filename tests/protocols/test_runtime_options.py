"""Ollama's runtime options: passed through from the OpenAI routes (top_k, num_ctx, options, keep_alive,
which were dropped silently before); per-model defaults from the config and a pipeline's options over
them, all under what a request sets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.core.conftest import Gateway, running_gateway
from tests.fakes.ollama import FakeOllama
from tests.protocols.conftest import INFERENCE_KEY, write_protocols_config

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {INFERENCE_KEY}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as raw:
        yield raw


def last(gateway: Gateway, path: str) -> dict[str, Any]:
    body: dict[str, Any] = [r for r in gateway.fake.requests if r.path == path][-1].json
    return body


async def test_openai_routes_pass_ollamas_options_on(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = {
        "model": "phi3", "messages": HELLO, "temperature": 0.1, "top_k": 5, "num_ctx": 8192,
        "keep_alive": "5m", "options": {"num_gpu": 1, "temperature": 0.9, "repeat_last_n": 64},
    }  # fmt: skip
    assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    sent = last(gateway, "/api/chat")
    # The top-level fields win over the options map.
    assert sent["options"] == {
        "num_gpu": 1,
        "temperature": 0.1,
        "repeat_last_n": 64,
        "top_k": 5,
        "num_ctx": 8192,
    }
    assert sent["keep_alive"] == "5m"
    completion = {"model": "phi3", "prompt": "x", "min_p": 0.05, "keep_alive": 0}
    assert (await http.post("/v1/completions", json=completion)).status_code == 200
    sent = last(gateway, "/api/generate")
    assert sent["options"] == {"min_p": 0.05} and sent["keep_alive"] == 0


async def test_options_cannot_pass_the_output_token_limit(http: httpx.AsyncClient) -> None:
    body = {"model": "phi3", "messages": HELLO, "options": {"num_predict": 10_000_000}}
    refused = await http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "options.num_predict"


async def test_per_model_defaults_under_the_request(gateway: Gateway, http: httpx.AsyncClient) -> None:
    # qwen3:latest has num_ctx 16384, keep_alive 1h and options {top_k: 30, temperature: 0.6} in the config.
    await http.post("/v1/chat/completions", json={"model": "qwen3:latest", "messages": HELLO})
    sent = last(gateway, "/api/chat")
    assert (
        sent["options"] == {"top_k": 30, "temperature": 0.6, "num_ctx": 16384} and sent["keep_alive"] == "1h"
    )
    native = {
        "model": "qwen3",
        "messages": HELLO,
        "stream": False,
        "options": {"num_ctx": 4096},
        "keep_alive": "2m",
    }
    await http.post("/api/chat", json=native)
    sent = last(gateway, "/api/chat")
    assert (
        sent["options"] == {"top_k": 30, "temperature": 0.6, "num_ctx": 4096} and sent["keep_alive"] == "2m"
    )
    await http.post("/api/chat", json={"model": "phi3", "messages": HELLO, "stream": False})
    assert "options" not in last(gateway, "/api/chat")  # a model without defaults gets none


async def test_a_pipelines_options_over_the_models_under_the_request(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "long.yaml").write_text(
        "format: chat\nroutes: [/v1/long/chat/completions]\n"
        "options: {num_ctx: 2048, top_k: 7}\nkeep_alive: 5m\n"
        "stages:\n  - auth: {required: true, scope: inference}\n"
    )
    headers = {"Authorization": f"Bearer {INFERENCE_KEY}"}
    async with FakeOllama() as fake:
        config = write_protocols_config(tmp_path, fake.port, folder)
        async with (
            running_gateway(config, fake, server="uvicorn") as gw,
            httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=10) as http,
        ):
            await http.post("/v1/long/chat/completions", json={"model": "qwen3:latest", "messages": HELLO})
            sent = last(gw, "/api/chat")
            assert sent["options"] == {"top_k": 7, "temperature": 0.6, "num_ctx": 2048}
            assert sent["keep_alive"] == "5m"
            asked = {"model": "qwen3:latest", "messages": HELLO, "num_ctx": 1000, "keep_alive": 0}
            await http.post("/v1/long/chat/completions", json=asked)
            sent = last(gw, "/api/chat")
            assert sent["options"]["num_ctx"] == 1000 and sent["keep_alive"] == 0


async def test_models_marked_preload_are_loaded_at_start(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        config = write_protocols_config(tmp_path, fake.port)
        text = config.read_text().replace('name: "qwen3:latest",', 'name: "qwen3:latest", preload: true,')
        config.write_text(text)
        async with running_gateway(config, fake, server="uvicorn"):
            for _ in range(500):  # the fake has no event for a load: polled, 10 s at most
                if "qwen3:latest" in fake.loaded:
                    break
                await asyncio.sleep(0.02)
    [load] = [r.json for r in fake.requests if r.path == "/api/generate"]
    assert load == {"model": "qwen3:latest", "prompt": "", "stream": False, "keep_alive": "1h",
                    "options": {"num_ctx": 16384}}  # fmt: skip
