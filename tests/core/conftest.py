"""A real gateway (hypercorn, in this process, on a loopback port) in front of a fake Ollama."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import uvicorn
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

from citadel_proxy.app import create_app
from citadel_proxy.auth.keys import generate_key, hash_key
from citadel_proxy.config import load_config
from citadel_proxy.http.head_limits import HeadLimits
from citadel_proxy.http.uvicorn_guard import guarded_httptools
from tests.fakes.ollama import FakeOllama

REPO = Path(__file__).resolve().parents[2]
# A key with every scope, given to the gateway by its digest as an operator would.
TEST_KEY = generate_key()
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "phi3", "messages": [{"role": "user", "content": "hi"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    url: str
    fake: FakeOllama
    config_path: Path


def write_config(
    tmp_path: Path,
    ollama_port: int,
    pipelines: Path,
    extra_gateway: str = "",
    extra: str = "",
    extra_keys: str = "",
) -> Path:
    """A gateway config in front of the fake: its models, the TEST_KEY (every scope), and what is given.

    `extra_gateway` goes under `gateway:`, `extra` at the top level, `extra_keys` (YAML list items) under
    `auth.keys`.
    """
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"""
ollama:
  service: {{host: 127.0.0.1, port: {ollama_port}, max_retries: 1, connect_timeout_s: 2}}
  models:
    - name: "phi3:latest"
    - name: "qwen3:latest"
    - name: "codellama:code"
    - name: "configured-not-pulled:latest"
model_routing:
  aliases: {{phi3: "phi3:latest", coder: "codellama:code"}}
gateway:
  keepalive_s: 0.3
  header_grace_ms: 100
{extra_gateway}
paths: {{pipelines: {pipelines}, data: {tmp_path}/data, logs: {tmp_path}/log, backups: {tmp_path}/backups}}
auth:
  keys:
    - {{name: tester, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}
{extra_keys}
{extra}
"""
    )
    return path


@contextlib.asynccontextmanager
async def running_gateway(
    config_path: Path, fake: FakeOllama, server: str = "hypercorn"
) -> AsyncIterator[Gateway]:
    config = load_config(config_path)
    app = create_app(config)
    port = free_port()
    stop = asyncio.Event()
    if server == "uvicorn":
        task = asyncio.create_task(_uvicorn(app, port, stop, HeadLimits.of(config.gateway)))
    else:
        task = asyncio.create_task(_hypercorn(app, port, stop))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.02)
    try:
        yield Gateway(f"http://127.0.0.1:{port}", fake, config_path)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _hypercorn(app: ASGIApp, port: int, stop: asyncio.Event) -> None:
    server = HypercornConfig()
    server.bind = [f"127.0.0.1:{port}"]
    server.accesslog = None
    server.graceful_timeout = 1.0
    await serve(app, server, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def _uvicorn(app: ASGIApp, port: int, stop: asyncio.Event, limits: HeadLimits) -> None:
    # The protocol `citadel-proxy serve` gives uvicorn (head limits, lean per-connection objects).
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False,
                       http=guarded_httptools(limits), timeout_graceful_shutdown=1)
    )  # fmt: skip
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


@pytest.fixture(params=["hypercorn", "uvicorn"])
async def gateway(fake: FakeOllama, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    async with running_gateway(config, fake, server=request.param) as gw:
        yield gw


@pytest.fixture
def custom_pipelines(tmp_path: Path) -> Path:
    """A pipelines folder for tests that need short deadlines or odd settings."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "fast.yaml").write_text(
        "format: chat\nroutes: [/v1/fast]\nagent: true\nstream_default: true\ntimeout: 1\n"
        "stages:\n  - chunking: {chunk_size: 1}\n"
    )
    (folder / "fastplain.yaml").write_text("format: chat\nroutes: [/v1/fastplain]\ntimeout: 1\n")
    return folder


async def stream_text(gw: Gateway, path: str, body: dict[str, object]) -> tuple[int, str]:
    """POST with the test key; the status and the whole body as text."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(gw.url + path, json=body) as response,
    ):
        return response.status, (await response.read()).decode()
