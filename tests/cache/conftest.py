"""A gateway with embeddings and answer caches on Redis (the shared test server, or a private one)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import REPO, TEST_KEY, Gateway, free_port, running_gateway
from tests.fakes.ollama import FakeOllama

EMBED_MODEL = "nomic-embed-text:latest"
OTHER_EMBED_MODEL = "mxbai-embed-large:latest"

# Answers cached whole; chunk_size 2 so a replayed answer is visibly regrouped.
CHAT_PIPELINE = """
format: chat
routes: [/v1/chat/completions]
stages:
  - metrics
  - auth: {required: true, scope: inference}
  - chunking: {chunk_size: 2, max_delay_ms: 0}
  - cache
"""
COMPLETIONS_PIPELINE = """
format: completion
routes: [/v1/completions]
stages:
  - metrics
  - auth: {required: true, scope: inference}
  - cache: {always: true}
"""
# A second embeddings pipeline with a short TTL: also checks that a path's ending picks its shape.
SHORT_PIPELINE = """
format: embeddings
routes: [/v1/short/embeddings]
stages:
  - auth: {required: true, scope: embeddings}
  - cache: {ttl: 0.5, prefix: "short:"}
"""


def write_cache_config(tmp_path: Path, ollama_port: int, pipelines: Path, redis_yaml: str) -> Path:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{host: 127.0.0.1, port: {ollama_port}, max_retries: 0, connect_timeout_s: 2}}
  models:
    - name: "phi3:latest"
    - name: "qwen3:latest"
    - name: "{EMBED_MODEL}"
    - name: "{OTHER_EMBED_MODEL}"
model_routing:
  aliases: {{nomic-embed-text: "{EMBED_MODEL}"}}
gateway:
  keepalive_s: 0.3
  header_grace_ms: 100
redis: {redis_yaml}
paths: {{pipelines: {pipelines}, data: {tmp_path}/data, logs: {tmp_path}/log, backups: {tmp_path}/backups}}
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}
"""
    )
    return path


def redis_yaml(url: str, prefix: str) -> str:
    parsed = urlparse(url)
    db = parsed.path.lstrip("/") or "0"
    return (
        f"{{host: {parsed.hostname}, port: {parsed.port or 6379}, database: {db}, key_prefix: '{prefix}',"
        " socket_timeout: 1, socket_connect_timeout: 1}"
    )


@pytest.fixture
def cache_pipelines(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "embeddings.yaml").write_text((REPO / "pipelines" / "embeddings.yaml").read_text())
    (folder / "chat.yaml").write_text(CHAT_PIPELINE)
    (folder / "completions.yaml").write_text(COMPLETIONS_PIPELINE)
    (folder / "short.yaml").write_text(SHORT_PIPELINE)
    return folder


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        server.install(OTHER_EMBED_MODEL)
        yield server


@pytest.fixture
async def gateway(
    fake: FakeOllama, tmp_path: Path, cache_pipelines: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[Gateway]:
    config = write_cache_config(tmp_path, fake.port, cache_pipelines, redis_yaml(redis_url, redis_prefix))
    async with running_gateway(config, fake) as gw:
        yield gw


@dataclass
class PrivateRedis:
    """A redis-server of the test's own (never the machine's), killed and restarted on the same port."""

    binary: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "yes"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.kill()
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()
