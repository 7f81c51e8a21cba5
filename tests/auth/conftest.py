"""Configs and key stores for the auth tests, on real PostgreSQL schemas and temporary data folders."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from citadel_proxy.auth.config import AuthConfig
from citadel_proxy.auth.store import KeyStore, open_key_store
from citadel_proxy.config.schema import Config, Database, Paths
from citadel_proxy.pipeline.types import Context

MakeConfig = Callable[..., Any]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    def make(database: Database | None = None, auth: AuthConfig | None = None) -> Any:
        return Config(paths=Paths(data=str(tmp_path / "data")), database=database, auth=auth or AuthConfig())

    return make


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.fixture
async def db_store(make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack) -> KeyStore:
    store = await open_key_store(make_config(database), stack)
    await wait_listening(store)
    return store


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 1.0) -> None:
    """Poll `check` until it holds; fail after `within_s` (a bound for what takes milliseconds)."""
    deadline = time.monotonic() + within_s
    for _ in itertools.count():
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {within_s} s")
        await asyncio.sleep(0.005)


async def wait_listening(store: KeyStore) -> None:
    async def listening() -> bool:
        return store.cache.listening

    await eventually(listening, 5)


def make_ctx(headers: dict[str, str] | None = None, client: str = "127.0.0.1") -> Context:
    """A context with what the auth and rate-limit stages read; the rest is not used by them."""
    return Context(
        request_id="test",
        pipeline=None,  # type: ignore[arg-type]
        route="/v1/chat/completions",
        client=client,
        headers=Headers(headers or {}),
        request=None,  # type: ignore[arg-type]
        model_requested="m",
        model="m",
        stream=False,
    )
