"""`keys list` says when config and file keys were last used (database keys keep their own column)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from citadel_proxy.cli import main
from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama


async def cli(*words: str) -> int:
    return await asyncio.to_thread(main, list(words))  # the CLI runs its own event loop


async def listed(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert await cli("keys", "list", "--json", "--config", str(config)) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


async def test_config_and_file_keys_show_their_last_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeOllama() as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines")
        assert await cli("keys", "create", "app", "--config", str(config)) == 0
        app_key = capsys.readouterr().out.strip()
        assert (await listed(config, capsys))["app"]["last_used"] is None
        async with running_gateway(config, fake, server="uvicorn") as gw, aiohttp.ClientSession() as session:
            for headers in (AUTH, {"Authorization": f"Bearer {app_key}"}):
                async with session.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
                    assert r.status == 200
        # Written at the latest when the gateway stops (and once a minute while it runs).
    rows = await listed(config, capsys)
    assert rows["app"]["last_used"] is not None and rows["tester"]["last_used"] is not None
    assert (
        "sha256" not in json.dumps(rows) and app_key not in (tmp_path / "data" / "key-usage.json").read_text()
    )
