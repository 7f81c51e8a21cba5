"""A pipeline's fallback model serves when the requested one cannot be admitted in time, and the
answer, its header and the audit say which model served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

from tests.admission.conftest import CHAT, HOLD, ask, until_running
from tests.core.conftest import REPO
from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import fleet_gateway, write_fleet_config


async def test_fallback_model_serves_when_the_primary_is_full(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    pipelines = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    chat = pipelines / "chat.yaml"
    chat.write_text(
        chat.read_text().replace("max_queue_ms: 5000", "max_queue_ms: 0\nfallback_models: [phi3]")
    )
    fakes["gpu-b"].behavior = HOLD
    config = write_fleet_config(
        tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 1}}, top="database: null"
    )
    config.write_text(config.read_text().replace(str(REPO / "pipelines"), str(pipelines)))
    async with fleet_gateway(config, fakes) as gw:
        first = asyncio.create_task(ask(gw.url, CHAT, "first"))
        await until_running(fakes["gpu-b"])
        status, headers, body, _ = await ask(gw.url, CHAT, "second")
        assert (await first)[0] == 200

    assert status == 200, body
    assert json.loads(body)["model"] == "phi3:latest"
    assert headers["x-citadel-model"] == "phi3:latest"
    assert headers["x-citadel-backend"] in ("gpu-a", "gpu-c")
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "audit.sqlite3")) as lite:
        rows = lite.execute(
            "SELECT model_requested, model FROM audit_requests ORDER BY created_at"
        ).fetchall()
    assert rows[-1] == ("mixtral", "phi3:latest")
