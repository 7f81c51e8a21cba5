"""For the deadline and input-limit attacks: small pipelines, a gateway on them, a client that never reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from tests.core.conftest import TEST_KEY, Gateway, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

# /v1/short: a voice-like stream with a 1 s deadline; /v1/long: a stream whose deadline never comes into it;
# /v1/plain and /v1/text: whole chat and completion answers; /api/embed and /v1/embeddings: no cache.
PIPELINES = {
    "short.yaml": "format: chat\nroutes: [/v1/short]\nstream_default: true\ntimeout: 1\n"
    "stages:\n  - chunking: {chunk_size: 1}\n",
    "long.yaml": "format: chat\nroutes: [/v1/long]\nstream_default: true\ntimeout: 600\n"
    "stages:\n  - chunking: {chunk_size: 1}\n",
    "plain.yaml": "format: chat\nroutes: [/v1/plain]\ntimeout: 600\n",
    "text.yaml": "format: completion\nroutes: [/v1/text]\ntimeout: 600\n",
    "embed.yaml": "format: embeddings\nroutes: [/api/embed, /v1/embeddings]\ntimeout: 600\n",
}


def pipelines(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    folder.mkdir(exist_ok=True)
    for name, text in PIPELINES.items():
        (folder / name).write_text(text)
    return folder


@contextlib.asynccontextmanager
async def gateway_on(
    tmp_path: Path, fake: FakeOllama, server: str, *, gateway: str = "", ollama: str = ""
) -> AsyncIterator[Gateway]:
    """A gateway on PIPELINES; `gateway` adds keys under `gateway:`, `ollama` to `ollama.service`."""
    config = write_config(tmp_path, fake.port, pipelines(tmp_path), extra_gateway=gateway)
    embedder = '    - name: "nomic-embed-text:latest"\n'
    config.write_text(config.read_text().replace("model_routing:", embedder + "model_routing:", 1))
    if ollama:
        text = config.read_text().replace("connect_timeout_s: 2}", f"connect_timeout_s: 2, {ollama}}}")
        config.write_text(text)
    async with running_gateway(config, fake, server=server) as gw:
        yield gw


async def post_without_reading(gw: Gateway, path: str, body: dict[str, object]) -> socket.socket:
    """Send a request on a socket with a small receive buffer and never read it: the caller reads later."""
    port = int(gw.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    raw = json.dumps(body).encode()
    request = (
        b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
    ) % (path.encode(), TEST_KEY.encode(), len(raw), raw)
    await loop.sock_sendall(sock, request)
    return sock


async def read_to_end(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the gateway still sends, and whether the connection ended (EOF or reset) in time."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await loop.sock_recv(sock, 1 << 20):
                data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return bytes(data), False
    finally:
        sock.close()
    return bytes(data), True
