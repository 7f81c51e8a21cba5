"""`monitoring.prometheus.port`: /metrics on a listener of its own, guarded like the route it replaces."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiohttp

from tests.core.conftest import AUTH, REPO, free_port, running_gateway, write_config
from tests.core.test_reload import start_serve, until_answering
from tests.fakes.ollama import FakeOllama


async def test_metrics_move_to_their_own_port(tmp_path: Path) -> None:
    port = free_port()
    async with FakeOllama() as fake:
        extra = f"monitoring: {{prometheus: {{port: {port}, allow: []}}}}"
        config = write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra)
        async with running_gateway(config, fake, server="uvicorn") as gw, aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH) as response:
                assert response.status == 200
                assert "citadel_build_info" in await response.text()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as anonymous:
                # Not in `allow`, no key: the same guard as on the gateway's port.
                assert anonymous.status == 401
                assert (await anonymous.json())["error"]["code"] == "invalid_api_key"
            async with session.get(f"http://127.0.0.1:{port}/v1/models", headers=AUTH) as other:
                assert other.status == 404  # the listener serves metrics alone
            async with session.get(gw.url + "/metrics", headers=AUTH) as moved:
                assert moved.status == 404


async def test_every_worker_shares_the_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    async with FakeOllama() as fake:
        extra = f"monitoring: {{prometheus: {{port: {port}}}}}"
        config = write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra)
        process, url = start_serve(config, 2, subprocess.DEVNULL)
        try:
            await until_answering(url, ok=True)
            async with aiohttp.ClientSession() as session:
                for _ in range(6):  # whichever worker the kernel picks answers with the sum over both
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        assert response.status == 200
                        assert "citadel_build_info" in await response.text()
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 20) == 0
