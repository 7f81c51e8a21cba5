"""A real gateway (uvicorn, the shipped pipelines) before the fake Ollama, for each protocol's own client.

Keys: TEST_KEY (tests.core.conftest.AUTH) has every scope; INFERENCE_KEY has inference and embeddings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citadel_proxy.auth.keys import generate_key, hash_key
from tests.core.conftest import REPO, TEST_KEY, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama

INFERENCE_KEY = generate_key()
EMBED_MODEL = "nomic-embed-text:latest"


def write_protocols_config(tmp_path: Path, ollama_port: int, pipelines: Path = REPO / "pipelines") -> Path:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{host: 127.0.0.1, port: {ollama_port}, max_retries: 0, connect_timeout_s: 2}}
  models:
    - name: "phi3:latest"
    - {{name: "qwen3:latest", num_ctx: 16384, keep_alive: 1h, options: {{top_k: 30, temperature: 0.6}}}}
    - name: "codellama:code"
    - name: "configured-not-pulled:latest"
    - name: "{EMBED_MODEL}"
model_routing:
  aliases: {{phi3: "phi3:latest", coder: "codellama:code", nomic-embed-text: "{EMBED_MODEL}"}}
gateway: {{keepalive_s: 0.3, header_grace_ms: 100}}
paths: {{pipelines: {pipelines}, data: {tmp_path}/data, logs: {tmp_path}/log,
         backups: {tmp_path}/backups}}
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}
    - {{name: app, sha256: {hash_key(INFERENCE_KEY).hex()}, scopes: [inference, embeddings],
        requests_per_minute: 1000}}
"""
    )
    return path


@pytest.fixture(params=["uvicorn", "hypercorn"])
async def gateway(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    async with FakeOllama() as fake:
        config = write_protocols_config(tmp_path, fake.port)
        async with running_gateway(config, fake, server=request.param) as gw:
            yield gw
