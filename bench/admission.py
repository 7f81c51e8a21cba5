"""`python -m bench.admission [--uvloop]`: the CPU the gateway spends to schedule a request, in process.

What is measured is CPU time of this thread (`time.thread_time`, the best of several runs, the garbage
collector off as in `timeit`), so the figures hold on a loaded machine and exclude the time a request
spends waiting: only the work done for it counts. Sends are stubs that answer at once.

- free: a request that finds a slot through `dispatch()`; the admission's part of it is asking whether
  anything waits for its model (and, when it ends, telling the queues its slot is free).
- queued: `BATCH` requests arrive while the model's only slot is taken, so each one queues; the slot is
  then given back and each request, when it has run, frees it for the next (the queue drains in its
  order: priority, aging, the keys' turns). Per request: the CPU of the queued batch less that of the
  same batch finding the slot free, both through `dispatch()`: to queue it (its first look at the
  backends, the deadline estimate, the heap), order it, wake it, and hand it its slot (its second look),
  plus the histogram of its wait. The batch of tasks itself is in both and cancels out.
- of which the task switch: a request that waits must give the event loop back and be resumed when its
  slot frees; whatever the queue, that costs one future, one wake-up and one more step of its task. It
  is measured alone (a FIFO of bare futures, each request resumed by the one before) and shown, and the
  figure without it is shown too; the target is checked on the whole figure, the switch included.

Target (issue 15, "Admission and scheduling"): scheduling overhead <= 10 us per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers

from citadel_proxy.config.schema import FleetOptions, OllamaService
from citadel_proxy.fleet.backend import Backend, new_breaker
from citadel_proxy.fleet.dispatch import dispatch
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.fleet.metrics import BackendSeries, FleetMetrics
from citadel_proxy.fleet.slots import WorkerSlots
from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.spec import Pipeline
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.upstream.client import OllamaClient

MODEL = "phi3:latest"
TARGET_US = 10.0
BATCH = 100  # requests queued at once: a deep queue for one worker
_CLASSES = [
    Pipeline(name, f"{name}.yaml", "chat", (), False, False, 600.0, "", (), priority=p, max_queue_ms=60_000)
    for name, p in (("voice", 4), ("chat", 2), ("gui", 1), ("research", 0))
]
_REPLY = Reply(completion=Completion(content="ok"))


@dataclass(frozen=True, slots=True)
class Figures:
    free_us: float  # a request that finds its slot: the admission's part
    queued_us: float  # a request that queues: the whole scheduling overhead, the task switch included
    switch_us: float  # of which the one task switch any waiting request costs
    loop: str

    @property
    def net_us(self) -> float:
        return self.queued_us - self.switch_us

    @property
    def verdict(self) -> str:
        return "PASS" if self.queued_us <= TARGET_US else "MISS"

    def lines(self) -> list[str]:
        return [
            f"admission ({self.loop}), slot free: {self.free_us:5.2f} us per request",
            f"{self.verdict}  scheduling overhead of a queued request ({self.loop}): {self.queued_us:5.2f} us"
            f" (target <= {TARGET_US:g}; of which the task switch {self.switch_us:.2f} us, the queue"
            f" {self.net_us:.2f} us)",
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "loop": self.loop,
            "free_us": self.free_us,
            "queued_us": self.queued_us,
            "switch_us": self.switch_us,
            "queue_only_us": self.net_us,
            "target_us": TARGET_US,
            "verdict": self.verdict,
        }


def _fleet() -> tuple[Fleet, Backend]:
    options = FleetOptions()
    metrics = FleetMetrics(CollectorRegistry())
    backend = Backend(
        name="gpu-0",
        client=OllamaClient(OllamaService(port=20000)),
        breaker=new_breaker(options, lambda _old, _new: None),
        series=BackendSeries.of(metrics, "gpu-0"),
        max_concurrent=1,
    )
    return Fleet(options, [backend], WorkerSlots(1), metrics), backend


def _context(i: int) -> Context:
    return Context(
        request_id=str(i),
        route="/v1/chat/completions",
        client=f"10.0.0.{i % 10}",  # ten keys: their turns are kept
        request=InferenceRequest(kind="chat", model=MODEL),
        model_requested=MODEL,
        model=MODEL,
        stream=False,
        conversation_id=None,
        pipeline=_CLASSES[i % len(_CLASSES)],
        headers=Headers(),
    )


async def _ok(_client: OllamaClient) -> Reply:
    return _REPLY


async def _cpu(
    batches: int, prepare: Callable[[], Awaitable[None]], one: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """CPU seconds of `batches` batches of BATCH tasks running `one`; `prepare` before each (not timed
    beyond what it leaves for the tasks to do)."""
    loop = asyncio.get_running_loop()
    spent = 0.0
    for _ in range(batches):
        started = time.thread_time()
        tasks = [loop.create_task(one(i)) for i in range(BATCH)]
        await prepare()
        await asyncio.gather(*tasks)
        spent += time.thread_time() - started
    return spent


async def _nothing() -> None:
    await asyncio.sleep(0)


async def dispatch_cpu(batches: int, queued: bool) -> float:
    fleet, backend = _fleet()
    held: list[object] = []

    async def one(i: int) -> None:
        await dispatch(fleet, _context(i), _ok)

    async def hold() -> None:
        held.append(await fleet.slots.take(backend))

    async def release() -> None:
        await asyncio.sleep(0)  # every request of the batch has run up to its wait
        await fleet.slots.give(backend, held.pop())
        fleet.admission.freed()

    if not queued:
        return await _cpu(batches, _nothing, one)
    total = 0.0
    for _ in range(batches):
        await hold()
        total += await _cpu(1, release, one)
    return total


async def switch_cpu(batches: int, resumed: bool) -> float:
    """A FIFO of bare futures, each request resumed by the one before it (or, `resumed` False, the same
    tasks not waiting at all)."""
    loop = asyncio.get_running_loop()
    fifo: collections.deque[asyncio.Future[None]] = collections.deque()

    async def one(_i: int) -> None:
        if resumed:
            future = loop.create_future()
            fifo.append(future)
            await future
            if fifo:
                fifo.popleft().set_result(None)

    async def release() -> None:
        await asyncio.sleep(0)
        if fifo:
            fifo.popleft().set_result(None)

    return await _cpu(batches, release, one)


def free_us(n: int = 100_000) -> float:
    """The admission's part of a request that finds a slot: is anything waiting; the slot freed."""
    fleet, _ = _fleet()
    admission = fleet.admission
    gc.disable()
    try:
        started = time.thread_time()
        for _ in range(n):
            admission.busy(MODEL)
            admission.served(MODEL, 0.2)
            admission.freed()
        return (time.thread_time() - started) / n * 1e6
    finally:
        gc.enable()


async def _best(measure: Callable[[], Awaitable[float]], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            best = min(best, await measure())
        finally:
            gc.enable()
    return best


async def figures(batches: int = 50, repeats: int = 5, loop: str = "asyncio") -> Figures:
    n = batches * BATCH
    await dispatch_cpu(2, True)  # warm: first calls import and fill caches
    queued = await _best(lambda: dispatch_cpu(batches, True), repeats)
    free = await _best(lambda: dispatch_cpu(batches, False), repeats)
    waiting = await _best(lambda: switch_cpu(batches, True), repeats)
    bare = await _best(lambda: switch_cpu(batches, False), repeats)
    return Figures(
        free_us=min(free_us() for _ in range(repeats)),
        queued_us=(queued - free) / n * 1e6,
        switch_us=(waiting - bare) / n * 1e6,
        loop=loop,
    )


def run(quick: bool = False, loop: str = "asyncio") -> Figures:
    """The figures on asyncio's loop or on uvloop (the gateway's, where installed)."""
    batches, repeats = (20, 5) if quick else (50, 7)
    if loop == "asyncio":
        return asyncio.run(figures(batches, repeats))
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(figures(batches, repeats, "uvloop"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="also under uvloop (production's loop)")
    args = parser.parse_args()
    for loop in ("asyncio", "uvloop") if args.uvloop else ("asyncio",):
        print("\n".join(run(args.quick, loop).lines()))


if __name__ == "__main__":
    main()
