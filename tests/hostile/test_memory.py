"""Large requests hand their memory back (issue 12: 4). The figures are `make bench`'s (bench/bodies.py);
here, that the malloc tuning they rest on takes effect in this process."""

from __future__ import annotations

import asyncio
import sys

import pytest

from citadel_proxy import memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


@glibc
def test_the_mmap_threshold_is_fixed() -> None:
    assert memory.return_large_blocks()


@glibc
async def test_a_burst_of_large_requests_is_trimmed_once() -> None:
    trims = memory._TRIM
    memory.trim_soon()
    first = trims._handle
    memory.trim_soon()
    assert first is not None and first.cancelled() and trims._handle is not None
    trims._handle.cancel()
    trims._run(lambda _pad: 1)
    assert trims._handle is None
    await asyncio.sleep(0)
