"""/health: every component checked; Ollama down is 503, PostgreSQL or Redis down is degraded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.audit.test_gateway_audit import database_section
from tests.core.conftest import REPO, free_port, running_gateway, write_config
from tests.fakes.ollama import FakeOllama


async def health_of(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
        return response.status, await response.json()


async def test_all_components_up(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, redis_prefix: str
) -> None:
    extra = (
        database_section(postgres_dsn, pg_schema)
        + f"\nredis: {{host: 127.0.0.1, key_prefix: '{redis_prefix}'}}"
    )
    async with (
        FakeOllama() as fake,
        running_gateway(write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra), fake) as gw,
    ):
        status, body = await health_of(gw.url)
    assert status == 200 and body["status"] == "ok"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert {name: check["status"] for name, check in checks.items()} == {
        "ollama": "ok", "database": "ok", "redis": "ok", "audit": "ok",
    }  # fmt: skip


async def test_redis_down_is_degraded_not_unavailable(tmp_path: Path) -> None:
    extra = f"redis: {{host: 127.0.0.1, port: {free_port()}}}"
    async with (
        FakeOllama() as fake,
        running_gateway(write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra), fake) as gw,
    ):
        status, body = await health_of(gw.url)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "down"  # type: ignore[index]


async def test_health_shares_its_probes_among_callers(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, redis_prefix: str
) -> None:
    """A public route that probed every backend per call let any client make the gateway open a
    PostgreSQL connection, a Redis client and a request to Ollama per call: calls that come together
    share one probe, and calls within max_age_s reuse it."""
    extra = (
        database_section(postgres_dsn, pg_schema)
        + f"\nredis: {{host: 127.0.0.1, key_prefix: '{redis_prefix}'}}"
        + "\nmonitoring: {health_checks: {enabled: false, max_age_s: 1.5}}"
    )
    async with (
        FakeOllama() as fake,
        running_gateway(write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra), fake) as gw,
    ):
        await asyncio.sleep(1.6)  # past any probe the gateway's start made
        before = fake.count("/api/version")
        answers = await asyncio.gather(*(health_of(gw.url) for _ in range(20)))
        assert all(status == 200 and body["status"] == "ok" for status, body in answers)
        assert fake.count("/api/version") == before + 1
        await asyncio.sleep(1.6)
        status, body = await health_of(gw.url)
        assert status == 200 and body["status"] == "ok"
        assert fake.count("/api/version") == before + 2  # a result older than max_age_s is not reused
