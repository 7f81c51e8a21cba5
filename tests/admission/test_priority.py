"""Requests that find the backend full wait in the gateway; the higher class starts first, and aging
bounds how long a lower class can be passed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.admission.conftest import GUI, VOICE, ask, one_slot, started_order, until_running, until_waiting
from tests.fakes.ollama import FakeOllama


async def test_voice_queued_behind_20_gui_starts_next(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]
    async with one_slot(tmp_path, fakes) as gw:
        first = asyncio.create_task(ask(gw.url, GUI, "gui-first"))
        await until_running(gpu_b)
        guis = [asyncio.create_task(ask(gw.url, GUI, f"gui-{i}")) for i in range(20)]
        await until_waiting(gw.url, "gui", 20)
        voice = await ask(gw.url, VOICE, "voice")
        results = await asyncio.gather(first, *guis)
    assert voice[0] == 200, voice[2]
    assert all(r[0] == 200 for r in results)  # they waited rather than being refused
    order = started_order(gpu_b)
    assert order[:2] == ["gui-first", "voice"]
    assert gpu_b.most_running == 1


async def test_aging_bounds_how_long_a_lower_class_is_passed(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    """aging_s 0.1: a gui request (class 1) is passed only by voice (class 4) arriving < 0.3 s after it."""
    gpu_b = fakes["gpu-b"]
    async with one_slot(tmp_path, fakes, fleet={"aging_s": 0.1}) as gw:
        first = asyncio.create_task(ask(gw.url, VOICE, "voice-first"))
        await until_running(gpu_b)
        gui = asyncio.create_task(ask(gw.url, GUI, "gui"))
        await until_waiting(gw.url, "gui", 1)
        voices = []
        for i in range(24):  # a voice request every 50 ms for 1.2 s: voice alone would fill the backend
            voices.append(asyncio.create_task(ask(gw.url, VOICE, f"voice-{i}")))
            await asyncio.sleep(0.05)
        await asyncio.gather(first, gui, *voices)
    order = started_order(gpu_b)
    assert "gui" in order
    # Voice sent 1 s after the gui request (over three times the 0.3 s bound) starts after it.
    later = {f"voice-{i}" for i in range(20, 24)} & set(order)
    assert all(order.index("gui") < order.index(tag) for tag in later)
    # Without aging the gui request would have waited for every voice request.
    assert order.index("gui") < len(order) - 1
