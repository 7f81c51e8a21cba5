"""Inside a gateway under test (bench/stalls.py loads it through a generated sitecustomize): every event-loop
callback that ran longer than a threshold, with what it was and where the time went, and every garbage
collection with its generation and length; written as JSON when the process exits.

The loop is the standard library's (uvloop is hidden), so that each callback goes through
`asyncio.events.Handle._run` and can be timed; with UVLOOP_ENV only collections are recorded. A sampling
thread (the interpreter's switch interval lowered to let it in) records the main thread's stack while a
callback has run past the threshold: the frames in the gateway's code say which part of a long callback
took the time.
"""

from __future__ import annotations

import asyncio.events
import atexit
import gc
import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

OUT_ENV = "CITADEL_STALL_OUT"
THRESHOLD_ENV = "CITADEL_STALL_MS"
SAMPLE_ENV = "CITADEL_STALL_SAMPLE"  # "1": sample stacks (slows the loop down a little)
GARBAGE_ENV = "CITADEL_STALL_GARBAGE"  # "1": keep what the collector frees, count it by type at exit
# "1": the gateway keeps uvloop (as in production); its callbacks cannot be timed, collections are
UVLOOP_ENV = "CITADEL_STALL_UVLOOP"
SAMPLE_EVERY_S = 0.0004
_STACK_DEPTH = 14


class Recorder:
    def __init__(self, out: str, threshold_s: float) -> None:
        self.out, self.threshold_s = out, threshold_s
        self.started = time.monotonic()
        self.callbacks = 0
        self.busy_s = 0.0
        self.slow: list[dict[str, Any]] = []
        self.collections: list[dict[str, Any]] = []
        self._gc_start = self._gc_cpu = 0.0
        self._current: tuple[float, list[tuple[str, ...]]] | None = None  # (start, stacks sampled)
        self._main = threading.get_ident()

    def run_handle(self, handle: Any, original: Any) -> None:
        samples: list[tuple[str, ...]] = []
        start = time.perf_counter()
        cpu = time.thread_time()
        self._current = (start, samples)
        try:
            original(handle)
        finally:
            self._current = None
            took = time.perf_counter() - start
            self.callbacks += 1
            self.busy_s += took
            if took >= self.threshold_s:
                self.slow.append(
                    {
                        "at_s": round(time.monotonic(), 4),
                        "ms": round(took * 1000, 3),
                        # CPU of this thread: a callback long in wall time but not in CPU was descheduled
                        # (another process took the core), not slow.
                        "cpu_ms": round((time.thread_time() - cpu) * 1000, 3),
                        "what": describe(handle),
                        "samples": [list(s) for s in samples],
                    }
                )

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            self._gc_cpu = time.thread_time()
            return
        took = time.perf_counter() - self._gc_start
        cpu = time.thread_time() - self._gc_cpu
        self.collections.append(
            {
                "at_s": round(time.monotonic(), 4),
                "gen": info["generation"],
                "ms": round(took * 1000, 3),
                "cpu_ms": round(cpu * 1000, 3),
                "collected": info["collected"],
            }
        )

    def sample_forever(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY_S)
            current = self._current
            if current is None or time.perf_counter() - current[0] < self.threshold_s / 2:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is not None and self._current is current:
                current[1].append(stack_of(frame))

    def dump(self) -> None:
        uptime = time.monotonic() - self.started
        data = {
            "pid": os.getpid(),
            "uptime_s": uptime,
            "callbacks": self.callbacks,
            "busy_s": self.busy_s,
            "threshold_ms": self.threshold_s * 1000,
            "gc_counts": gc.get_count(),
            "gc_threshold": gc.get_threshold(),
            "gc_frozen": gc.get_freeze_count(),
            "gc_objects": len(gc.get_objects()),
            "slow": self.slow,
            "collections": self.collections,
            "garbage": garbage_by_type(),
        }
        with open(self.out, "w") as out:
            json.dump(data, out)


def garbage_by_type() -> list[tuple[str, int]]:
    """What the collector found unreachable (with GARBAGE_ENV), by type and, for functions and
    coroutines, by name: the reference cycles that requests leave behind."""
    if not gc.get_debug() & gc.DEBUG_SAVEALL:
        return []
    gc.collect()
    counts: dict[str, int] = {}
    for item in gc.garbage:
        name = type(item).__qualname__
        if hasattr(item, "__qualname__") and not isinstance(item, type):
            name += " " + str(item.__qualname__)
        elif type(item).__name__ == "frame":
            name += " " + item.f_code.co_qualname + " " + short(item.f_code.co_filename)
        elif type(item).__name__ == "cell":
            name += " " + type(item.cell_contents).__qualname__ if item.cell_contents is not None else ""
        counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:60]


def stack_of(frame: FrameType | None) -> tuple[str, ...]:
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append(f"{short(code.co_filename)}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return tuple(frames[:_STACK_DEPTH])


def short(path: str) -> str:
    for marker in ("/citadel_proxy/", "/site-packages/", "/lib/python3"):
        if marker in path:
            return path[path.index(marker) + 1 :]
    return path


def describe(handle: Any) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        frame = getattr(coro, "cr_frame", None)
        where = f" now at {short(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else ""
        return f"task {name}{where}"
    code = getattr(callback, "__code__", None) or getattr(
        getattr(callback, "__func__", None), "__code__", None
    )
    if code is not None:
        return (
            f"{getattr(callback, '__qualname__', callback)} ({short(code.co_filename)}:{code.co_firstlineno})"
        )
    return repr(callback)[:200]


def install() -> None:
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    recorder = Recorder(out, float(os.environ.get(THRESHOLD_ENV, "0.5")) / 1000)
    gc.callbacks.append(recorder.on_gc)
    keep_uvloop = os.environ.get(UVLOOP_ENV) == "1"
    if not keep_uvloop:
        # Hidden so that the gateway runs the standard loop, whose callbacks can be timed.
        sys.modules["uvloop"] = None  # type: ignore[assignment]
        original = asyncio.events.Handle._run

        def timed_run(self: Any) -> None:
            recorder.run_handle(self, original)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    if os.environ.get(SAMPLE_ENV) == "1":
        sys.setswitchinterval(SAMPLE_EVERY_S)
        threading.Thread(target=recorder.sample_forever, daemon=True, name="stall-sampler").start()
    if os.environ.get(GARBAGE_ENV) == "1":
        gc.set_debug(gc.DEBUG_SAVEALL)
    atexit.register(recorder.dump)
    # uvicorn raises the SIGTERM it caught again once it has shut down: without a handler of our own the
    # process would end there, before atexit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
