"""A real gateway (uvicorn on a loopback port, the shipped pipelines) before the fake Ollama, for clients.

Synchronous clients (openai.OpenAI, LangChain's invoke) block: run them with `asyncio.to_thread`, as the
gateway serves on this test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import REPO, TEST_KEY, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama

EMBED_MODEL = "nomic-embed-text:latest"


def write_compat_config(tmp_path: Path, ollama_port: int) -> Path:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{host: 127.0.0.1, port: {ollama_port}, max_retries: 0, connect_timeout_s: 2}}
  models:
    - name: "phi3:latest"
    - name: "qwen3:latest"
    - name: "codellama:code"
    - name: "{EMBED_MODEL}"
model_routing:
  aliases: {{phi3: "phi3:latest", coder: "codellama:code", nomic-embed-text: "{EMBED_MODEL}"}}
paths: {{pipelines: {REPO / "pipelines"}, data: {tmp_path}/data, logs: {tmp_path}/log,
         backups: {tmp_path}/backups}}
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings]}}
"""
    )
    return path


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with FakeOllama() as fake:
        config = write_compat_config(tmp_path, fake.port)
        async with running_gateway(config, fake, server="uvicorn") as gw:
            yield gw
