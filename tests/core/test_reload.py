"""SIGHUP re-reads the pipelines: streams in flight go on, new requests get the new settings."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from tests.core.conftest import AUTH, CHAT, REPO, free_port, write_config
from tests.fakes.ollama import Behavior, FakeOllama


def start_serve(config: Path, workers: int, out: IO[bytes] | int) -> tuple[subprocess.Popen[bytes], str]:
    """`citadel-proxy serve` in a process of its own, on a free port; returns it and its URL."""
    port = free_port()
    command = [sys.executable, "-m", "citadel_proxy", "serve", "--config", str(config)]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "PROMETHEUS_"))}
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}"


async def until_answering(url: str, *, ok: bool = False) -> None:
    """Wait (15 s at most) until GET /v1/models answers; with `ok`, until it answers 200."""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for _ in range(150):
            try:
                async with session.get(url + "/v1/models") as response:
                    if not ok or response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture(
    params=[("hypercorn", 1), ("hypercorn", 2), ("uvicorn", 1), ("uvicorn", 2)],
    ids=["hypercorn-1", "hypercorn-2", "uvicorn-1", "uvicorn-2"],
)
async def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, FakeOllama, Path, subprocess.Popen[bytes], int]]:
    pipelines = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    async with FakeOllama(behavior=Behavior.counted(12, tokens_per_write=12)) as fake:
        server, workers = request.param
        config = write_config(tmp_path, fake.port, pipelines, extra_gateway=f"  server: {server}")
        log = (tmp_path / "gateway.log").open("wb")
        process, url = start_serve(config, workers, log)
        try:
            await until_answering(url)
            yield url, fake, pipelines, process, workers
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            log.close()


async def gui_event_sizes(session: aiohttp.ClientSession, url: str) -> list[int]:
    async with session.post(url + "/v1/gui/chat/completions", json=CHAT) as response:
        text = (await response.read()).decode()
    events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
    return [
        len(e["choices"][0]["delta"]["content"].split())
        for e in events
        if e["choices"][0]["delta"].get("content")
    ]


async def reloaded_everywhere(log: Path, workers: int, before: int) -> None:
    """Wait (10 s at most) until each worker has logged a reload since `before` were logged: a worker
    logs it once its new pipelines are in force, and a request may reach any worker."""
    for _ in range(200):
        if _reloads(log) >= before + workers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{_reloads(log) - before} of {workers} workers reloaded")


def _reloads(log: Path) -> int:
    """The reloads the gateway's workers have logged so far."""
    return log.read_text(errors="replace").count("pipelines reloaded")


async def test_reload_keeps_streams_and_applies_new_settings(
    served: tuple[str, FakeOllama, Path, subprocess.Popen[bytes], int],
) -> None:
    url, fake, pipelines, process, workers = served
    log = pipelines.parent / "gateway.log"
    gui = pipelines / "gui.yaml"
    async with aiohttp.ClientSession(headers=AUTH) as session:
        assert await gui_event_sizes(session, url) == [10, 2]
        fake.next(Behavior.counted(30, token_delay_s=0.1))
        long = await session.post(url + "/v1/gui/chat/completions", json=CHAT)
        await long.content.readuntil(b"\n\n")
        gui.write_text(gui.read_text().replace("chunk_size: 10", "chunk_size: 4"))
        before = _reloads(log)
        process.send_signal(signal.SIGHUP)
        # Every worker reloads; then a few requests, which may reach any of them.
        await reloaded_everywhere(log, workers, before)
        sizes = {tuple(await gui_event_sizes(session, url)) for _ in range(6)}
        assert sizes == {(4, 4, 4)}
        # A broken file is refused whole: the pipelines in force stay.
        gui.write_text("stages:\n  - chunking: {chunk_size: lots}\n")
        process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert await gui_event_sizes(session, url) == [4, 4, 4]
        rest = (await long.read()).decode()
        long.release()
    assert rest.endswith("data: [DONE]\n\n")
    assert process.poll() is None


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_sighup_while_workers_start_kills_none_and_sigterm_stops_all(
    server: str, tmp_path: Path
) -> None:
    async with FakeOllama(behavior=Behavior.counted(3)) as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines", extra_gateway=f"  server: {server}")
        process, url = start_serve(config, 2, subprocess.DEVNULL)
        try:
            await asyncio.sleep(0.3)  # the workers are importing: their apps have no reload handler yet
            for _ in range(3):
                process.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.2)
            await until_answering(url, ok=True)
            async with aiohttp.ClientSession(headers=AUTH) as session:
                sizes = {tuple(await gui_event_sizes(session, url)) for _ in range(8)}
            assert sizes == {(3,)}
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 20) == 0
