"""/health: every component checked; Ollama down is 503, PostgreSQL or Redis down is degraded."""

from __future__ import annotations

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
