"""The context_guard stage: a prompt past the model's context is refused (400 context_length_exceeded in
the caller's protocol) or given a larger num_ctx, instead of being cut silently; an answer whose prompt
count reached num_ctx is flagged in a header and a metric."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from citadel_proxy.config.yamlsource import YamlSourceError
from citadel_proxy.pipeline.spec import load_pipeline
from citadel_proxy.stages.registry import stage_types
from tests.core.conftest import AUTH, Gateway, running_gateway
from tests.fakes.ollama import Behavior, FakeOllama
from tests.protocols.conftest import write_protocols_config

STAGES = "stages:\n  - audit\n  - metrics\n  - auth: {required: true, scope: inference}\n"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "refuse.yaml").write_text(
        "format: chat\nroutes: [/v1/chat/completions]\n"
        + STAGES
        + "  - context_guard: {default_num_ctx: 100}\n"
    )
    (folder / "raise.yaml").write_text(
        "format: ollama-chat\nroutes: [/api/chat]\n" + STAGES
        + "  - context_guard: {policy: raise, default_num_ctx: 100, max_num_ctx: 3000}\n"
    )  # fmt: skip
    (folder / "fallback.yaml").write_text(
        "format: completion\nroutes: [/v1/completions]\n" + STAGES
        + "  - context_guard: {policy: fallback, fallback_model: qwen3, default_num_ctx: 100}\n"
    )  # fmt: skip
    async with FakeOllama() as fake:
        config = write_protocols_config(tmp_path, fake.port, folder)
        async with running_gateway(config, fake, server="uvicorn") as gw:
            yield gw


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as raw:
        yield raw


def chat(chars: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "x" * chars}]


async def test_a_prompt_past_num_ctx_is_refused(gateway: Gateway, http: httpx.AsyncClient) -> None:
    refused = await http.post("/v1/chat/completions", json={"model": "phi3", "messages": chat(800)})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert gateway.fake.count("/api/chat") == 0
    fits = await http.post("/v1/chat/completions", json={"model": "phi3", "messages": chat(200)})
    assert fits.status_code == 200
    # The request's own num_ctx is the one that counts.
    larger = {"model": "phi3", "messages": chat(800), "num_ctx": 1024}
    assert (await http.post("/v1/chat/completions", json=larger)).status_code == 200


async def test_num_ctx_is_raised_up_to_the_ceiling(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = {"model": "phi3", "messages": chat(4000), "stream": False}
    answer = await http.post("/api/chat", json=body)
    assert answer.status_code == 200 and answer.headers["x-context-num-ctx"] == "2048"
    sent = [r for r in gateway.fake.requests if r.path == "/api/chat"][-1].json
    assert sent["options"]["num_ctx"] == 2048
    too_long = await http.post("/api/chat", json={"model": "phi3", "messages": chat(40_000)})
    assert too_long.status_code == 400 and "3000 tokens" in too_long.json()["error"]


async def test_a_longer_context_model_takes_what_does_not_fit(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    answer = await http.post("/v1/completions", json={"model": "phi3", "prompt": "x" * 4000})
    assert answer.status_code == 200 and answer.headers["x-context-model"] == "qwen3:latest"
    sent = [r for r in gateway.fake.requests if r.path == "/api/generate"][-1].json
    assert sent["model"] == "qwen3:latest" and sent["options"]["num_ctx"] == 2048
    short = await http.post("/v1/completions", json={"model": "phi3", "prompt": "x" * 40})
    assert "x-context-model" not in short.headers
    assert [r for r in gateway.fake.requests if r.path == "/api/generate"][-1].json["model"] == "phi3:latest"


async def test_a_cut_prompt_is_flagged(gateway: Gateway, http: httpx.AsyncClient) -> None:
    gateway.fake.next(Behavior(prompt_eval_count=100))  # Ollama kept the last num_ctx tokens
    cut = await http.post("/v1/chat/completions", json={"model": "phi3", "messages": chat(300)})
    assert cut.headers["x-context-truncated"] == "true"
    whole = await http.post("/v1/chat/completions", json={"model": "phi3", "messages": chat(30)})
    assert "x-context-truncated" not in whole.headers
    gateway.fake.next(Behavior(prompt_eval_count=100))
    async with http.stream("POST", "/api/chat", json={"model": "phi3", "messages": chat(300)}) as response:
        await response.aread()
    metrics = (await http.get("/metrics")).text
    assert 'citadel_context_truncated_total{model="phi3:latest"} 2.0' in metrics
    assert await flagged_records(gateway) == 2  # the two cut answers, not the whole one


async def flagged_records(gateway: Gateway) -> int:
    """Audit records (the embedded SQLite store) whose response says the prompt was cut, once all three
    exchanges are written (a batch later, linger_s)."""
    database = gateway.config_path.parent / "data" / "audit.sqlite3"
    for _ in range(400):
        if database.exists():
            with sqlite3.connect(database) as db:
                rows = [r[0] for r in db.execute("SELECT response FROM audit_requests")]
            if len(rows) >= 3:
                return sum(json.loads(r or "{}").get("context_truncated") is True for r in rows)
        await asyncio.sleep(0.05)
    raise AssertionError("the audit records were not written")


def test_the_fallback_policy_needs_its_model(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("format: chat\nroutes: [/v1/x]\nstages:\n  - context_guard: {policy: fallback}\n")
    with pytest.raises(YamlSourceError, match="fallback_model"):
        load_pipeline(path, stage_types(), 60.0)
