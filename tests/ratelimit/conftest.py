"""Redis clients on the shared test server, and a private redis-server that a test may kill."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from citadel_proxy.redis_lean import LeanRedis
from tests.core.conftest import free_port


def redis_client(url: str) -> LeanRedis:
    """The client open_rate_limiter builds, for redis://host:port/db."""
    address, _, database = url.removeprefix("redis://").partition("/")
    host, _, port = address.rpartition(":")
    return LeanRedis(host, int(port), database=int(database or 0), connect_timeout_s=1, reply_timeout_s=1)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[LeanRedis]:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def other_client(redis_url: str) -> AsyncIterator[LeanRedis]:
    """A second connection, as another gateway process would have."""
    client = redis_client(redis_url)
    yield client
    await client.aclose()


@dataclass
class OwnRedis:
    process: subprocess.Popen[bytes]
    url: str

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


def start_redis(*options: str) -> OwnRedis:
    """A redis-server of the caller's own (never the machine's), so it can be killed mid-test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = OwnRedis(process, f"redis://127.0.0.1:{port}/0")
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                server.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.02)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = start_redis()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
