"""A gateway in front of a fake Ollama, with an admin key (AUTH) and an inference-only key (READER)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from citadel_proxy.auth.keys import generate_key, hash_key
from tests.core.conftest import AUTH, REPO, Gateway, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

INFERENCE_KEY = generate_key()
READER = {"Authorization": f"Bearer {INFERENCE_KEY}"}
# Slow enough that a client can leave mid-pull, fast enough for the suite (7 steps).
PULL_STEP_S = 0.05


def write_management_config(tmp_path: Path, ollama_port: int) -> Path:
    """The core tests' config, plus a key with only the `inference` scope."""
    reader = f"    - {{name: reader, sha256: {hash_key(INFERENCE_KEY).hex()}, scopes: [inference]}}"
    return write_config(tmp_path, ollama_port, REPO / "pipelines", extra_keys=reader)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(pull_step_delay_s=PULL_STEP_S) as server:
        yield server


@pytest.fixture
async def gateway(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(write_management_config(tmp_path, fake.port), fake) as gw:
        yield gw


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[Callable[..., Any]]:
    """`await admin(method, path, json=...)` -> (status, parsed JSON body) with the admin key."""
    async with aiohttp.ClientSession(gateway.url, headers=AUTH) as session:

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
            async with session.request(method, path, **kwargs) as response:
                return response.status, await response.json(content_type=None)

        yield call
