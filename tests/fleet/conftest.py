"""Three fake Ollama servers with different models and loaded sets, and a gateway in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import AUTH, REPO, TEST_KEY, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama
from tests.fakes.ollama.models import FakeModel

CHAT_PATH = "/v1/chat/completions"


def chat(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeOllama]]:
    """gpu-a: phi3 (loaded), qwen3. gpu-b: phi3, mixtral (loaded). gpu-c: qwen3 (loaded), phi3."""
    servers = {
        "gpu-a": FakeOllama([FakeModel("phi3:latest"), FakeModel("qwen3:latest")]),
        "gpu-b": FakeOllama([FakeModel("phi3:latest"), FakeModel("mixtral:latest")]),
        "gpu-c": FakeOllama([FakeModel("qwen3:latest"), FakeModel("phi3:latest")]),
    }
    async with contextlib.AsyncExitStack() as stack:
        for fake in servers.values():
            await stack.enter_async_context(fake)
        servers["gpu-a"].load("phi3:latest")
        servers["gpu-b"].load("mixtral:latest")
        servers["gpu-c"].load("qwen3:latest")
        yield servers


def backends_yaml(fakes: dict[str, FakeOllama], extra: dict[str, dict[str, Any]] | None = None) -> str:
    lines = []
    for name, fake in fakes.items():
        entry: dict[str, Any] = {
            "name": name,
            "url": fake.url,
            "max_concurrent": 4,
            **(extra or {}).get(name, {}),
        }
        lines.append(f"    - {json.dumps(entry)}")
    return "\n".join(lines)


def write_fleet_config(
    tmp_path: Path,
    fakes: dict[str, FakeOllama],
    *,
    per_backend: dict[str, dict[str, Any]] | None = None,
    fleet: dict[str, Any] | None = None,
    top: str = "",
) -> Path:
    """A gateway config whose `ollama.backends` are the fakes; `per_backend` sets keys of one entry,
    `fleet` keys of `ollama.fleet`, `top` is YAML at the top level."""
    options = {"inventory_interval_s": 0.2, "breaker_failures": 2, "breaker_cooldown_s": 0.5, **(fleet or {})}
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{max_retries: 0, connect_timeout_s: 2}}
  backends:
{backends_yaml(fakes, per_backend)}
  models:
    - {{name: "phi3:latest"}}
    - {{name: "qwen3:latest"}}
    - {{name: "mixtral:latest"}}
    - {{name: "nowhere:latest"}}
  fleet: {json.dumps(options)}
gateway:
  keepalive_s: 0.3
  header_grace_ms: 100
paths:
  pipelines: {REPO / "pipelines"}
  data: {tmp_path}/data
  logs: {tmp_path}/log
  backups: {tmp_path}/backups
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}
{top}
"""
    )
    return path


async def backends_report(url: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(url + "/management/backends") as response,
    ):
        assert response.status == 200
        data: list[dict[str, Any]] = (await response.json())["data"]
        return data


async def inventory_read(url: str, names: Iterable[str]) -> None:
    """Wait until the gateway has read every named backend's models."""
    wanted = set(names)
    async with asyncio.timeout(10):
        while True:
            report = await backends_report(url)
            if wanted <= {b["name"] for b in report if b["installed"] is not None}:
                return
            await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Wait until `check()` holds (a failure if it never does within `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def answers(url: str, model: str) -> bool:
    return (await post(url, chat(model)))[0] == 200


@contextlib.asynccontextmanager
async def fleet_gateway(config: Path, fakes: dict[str, FakeOllama]) -> AsyncIterator[Gateway]:
    async with running_gateway(config, next(iter(fakes.values()))) as gw:
        await inventory_read(gw.url, fakes)
        yield gw


async def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(url + CHAT_PATH, json=body, headers=headers or {}) as response,
    ):
        return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()
