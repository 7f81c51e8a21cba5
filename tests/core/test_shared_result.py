"""SharedResult: one run for callers that come together, reused while young, not cancelled by a leaver."""

from __future__ import annotations

import asyncio

import pytest

from citadel_proxy.health.shared import SharedResult


async def test_a_caller_that_leaves_does_not_cancel_the_run_the_others_wait_for() -> None:
    shared: SharedResult[int] = SharedResult()
    runs = 0
    release = asyncio.Event()

    async def run() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        return runs

    leaver = asyncio.create_task(shared.get(run, max_age_s=60))
    stayer = asyncio.create_task(shared.get(run, max_age_s=60))
    await asyncio.sleep(0)
    leaver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaver
    release.set()
    assert await stayer == 1
    assert await shared.get(run, max_age_s=60) == 1  # young: reused
    assert runs == 1
    assert await shared.get(run, max_age_s=1e-9) == 2  # old: run again
