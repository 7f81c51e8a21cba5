"""`python -m bench.admission`: what the admission queue costs per request, in process (no network).

- free: a request that finds a slot (is anything waiting for its model; the service time noted; the
  queues told a slot is free).
- queued: a request that waits behind others and is started when a slot frees (heap push, timeout,
  wake, pop), 1000 of them: the loop's time divided by the requests, the sends being stubs.

Target (issue "Admission and scheduling"): scheduling overhead <= 10 us per request.
"""

from __future__ import annotations

import asyncio
import time

from citadel_proxy.fleet.admission import Admission

MODEL = "phi3:latest"


def free_us(n: int = 100_000) -> float:
    admission = Admission(aging_s=2.0, retry_after_s=2)
    started = time.perf_counter()
    for _ in range(n):
        admission.busy(MODEL)
        admission.served(MODEL, 0.2)
        admission.freed()
    return (time.perf_counter() - started) / n * 1e6


async def queued_us(n: int = 1000) -> float:
    """n requests queue behind a full backend; each freed slot starts the next."""
    admission = Admission(aging_s=2.0, retry_after_s=2)
    slots = 0

    async def start() -> bool | None:
        nonlocal slots
        if slots:
            slots -= 1
            return True
        return None

    async def one(i: int) -> None:
        await admission.wait(MODEL, "gui", f"key-{i % 10}", i % 5, 60.0, 1, start)
        admission.freed()

    tasks = [asyncio.create_task(one(i)) for i in range(n)]  # in the gateway, the request's own task
    began = time.perf_counter()
    await asyncio.sleep(0)  # all queued
    slots = n
    admission.freed()
    await asyncio.gather(*tasks)
    return (time.perf_counter() - began) / n * 1e6


def main() -> None:
    print(f"admission, slot free:       {free_us():.2f} us per request")
    print(f"admission, queued (1000):   {asyncio.run(queued_us()):.2f} us per request")


if __name__ == "__main__":
    main()
