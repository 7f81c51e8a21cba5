"""glibc's malloc, told to give the buffers of a large request back to the system when they are freed."""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3  # malloc.h
# Blocks this large or larger get a mapping of their own, unmapped on free. Requests and answers of the
# hot path are far smaller, so they never pay the mmap and page faults.
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold; True when done (False off Linux or without glibc's mallopt).

    glibc raises the threshold to the size of each mapped block freed, up to 32 MiB: after one large
    request, the next one's body, decoded text and encoded copies come from the heap, where they stay
    with the worker (a 13 MB body left tens of MiB behind). A fixed threshold turns that off.
    """
    mallopt = _libc("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_soon() -> None:
    """After a large request ended: give the heap's free pages back once the burst of them has passed."""
    _TRIM.soon()


class _Trim:
    """malloc_trim shortly after the last large request ended, once for a burst of them.

    Freed blocks under the mmap threshold (a large request makes many: decoded messages, audit records)
    leave free pages inside the heap that glibc keeps; malloc_trim hands them back (measured with
    `make bench`: 13 MB bodies on the full pipeline left 29 MiB behind without it, 16 MiB with it).
    The malloc state is the process's, so this is one object per process.
    """

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        trim = _libc("malloc_trim")
        if trim is None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_later(_TRIM_DELAY_S, self._run, trim)

    def _run(self, trim: Callable[..., int]) -> None:
        self._handle = None
        trim(0)


_TRIM_DELAY_S = 0.2
_TRIM = _Trim()


def _libc(name: str) -> Callable[..., int] | None:
    """A function of glibc, or None elsewhere (other systems, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    function: Callable[..., int] | None = getattr(ctypes.CDLL(None), name, None)
    return function
