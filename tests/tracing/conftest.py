"""A gateway with tracing in front of the fake Ollama, exporting to a receiver the test started."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import REPO, TEST_KEY, Gateway, running_gateway
from tests.fakes.ollama import FakeOllama

EMBED_MODEL = "nomic-embed-text:latest"


def tracing_config(tmp_path: Path, ollama_port: int, tracing: str, more: str = "") -> Path:
    """The shipped pipelines, the fake's models, the test key, `tracing` (YAML flow mapping), and `more`
    top-level YAML (e.g. a `redis:` section)."""
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{host: 127.0.0.1, port: {ollama_port}, max_retries: 0, connect_timeout_s: 2}}
  models:
    - name: "phi3:latest"
    - name: "{EMBED_MODEL}"
model_routing:
  aliases: {{phi3: "phi3:latest", nomic-embed-text: "{EMBED_MODEL}"}}
paths: {{pipelines: {REPO / "pipelines"}, data: {tmp_path}/data, logs: {tmp_path}/log}}
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}
project: {{name: citadel-test, environment: test, version: "9.9.9"}}
monitoring:
  tracing: {tracing}
{more}
"""
    )
    return path


@contextlib.asynccontextmanager
async def traced_gateway(
    tmp_path: Path, fake: FakeOllama, tracing: str, more: str = ""
) -> AsyncIterator[Gateway]:
    """The gateway runs inside; when the block ends it has shut down, so every span has been sent."""
    async with running_gateway(tracing_config(tmp_path, fake.port, tracing, more), fake) as gateway:
        yield gateway
