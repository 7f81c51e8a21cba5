"""The queue itself, in process: a slot freed wakes one waiter, the best; a waiter cancelled after it was
woken passes its turn on; deadlines refuse those still waiting; slots freed elsewhere are seen by the
head's periodic look."""

from __future__ import annotations

import asyncio

import pytest

from citadel_proxy import errors
from citadel_proxy.fleet.admission import Admission

MODEL = "phi3:latest"


class Slots:
    """`free` slots, taken by `start`; counts the tries."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.free = 0
        self.tries = 0
        self.delay_s = delay_s  # a look that takes time (Redis)

    async def start(self) -> bool | None:
        self.tries += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.free:
            self.free -= 1
            return True
        return None


def waiter(
    admission: Admission,
    slots: Slots,
    order: list[str],
    tag: str,
    priority: int = 1,
    max_queue_s: float = 5.0,
    key: str | None = None,
) -> asyncio.Task[None]:
    async def run() -> None:
        await admission.wait(MODEL, "gui", key or tag, priority, max_queue_s, 1, slots.start)
        order.append(tag)

    return asyncio.get_running_loop().create_task(run())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_freed_slot_wakes_one_waiter_the_best() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    tasks = [waiter(admission, slots, order, f"gui-{i}") for i in range(5)]
    await settle()
    tasks.append(waiter(admission, slots, order, "voice", priority=4))
    await settle()
    assert admission.busy(MODEL) and admission.waiting["gui"] == 6
    for _ in range(6):
        slots.free += 1
        admission.freed()
        await settle()
    await asyncio.gather(*tasks)
    assert order == ["voice", "gui-0", "gui-1", "gui-2", "gui-3", "gui-4"]
    assert slots.tries == 6  # nobody woke for nothing
    assert not admission.busy(MODEL)


async def test_a_waiter_cancelled_after_it_was_woken_passes_its_turn_on() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    first = waiter(admission, slots, order, "first")
    second = waiter(admission, slots, order, "second")
    await settle()
    slots.free += 1
    admission.freed()  # wakes "first" ...
    first.cancel()  # ... which is gone before it runs
    await settle()
    await second
    assert order == ["second"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_two_slots_freed_while_the_only_waiter_is_woken_serve_the_next_arrival() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(delay_s=0.005), []
    first = waiter(admission, slots, order, "first")
    await settle()
    slots.free += 2
    admission.freed()
    admission.freed()  # nobody left in the list to wake: kept for the next to queue
    await settle()  # "first" is trying for its slot
    assert admission.busy(MODEL)  # so a newcomer queues
    second = waiter(admission, slots, order, "second")
    await asyncio.wait_for(asyncio.gather(first, second), 0.04)  # not after a 50 ms look
    assert sorted(order) == ["first", "second"]


async def test_a_waiter_past_its_deadline_is_refused_with_retry_after() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=3), Slots(), []
    admission.served(MODEL, 0.01)  # the estimate lets it in
    loop = asyncio.get_running_loop()
    started = loop.time()
    late = waiter(admission, slots, order, "late", max_queue_s=0.12)
    with pytest.raises(errors.ServiceUnavailable) as refused:
        await late
    assert 0.12 <= loop.time() - started < 0.3
    assert refused.value.code == "backends_busy" and refused.value.headers["Retry-After"] == "3"
    assert not admission.busy(MODEL) and admission.waiting["gui"] == 0


async def test_an_estimate_past_the_deadline_is_refused_at_once() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    admission.served(MODEL, 0.5)
    waiters = [waiter(admission, slots, order, f"gui-{i}", max_queue_s=10.0) for i in range(4)]
    await settle()
    with pytest.raises(errors.ServiceUnavailable) as refused:
        await admission.wait(MODEL, "gui", "late", 1, 2.0, 1, slots.start)  # 4 ahead, 0.5 s each
    assert refused.value.headers["Retry-After"] == "3"  # ceil((4 + 1) * 0.5)
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_slot_freed_elsewhere_is_seen_by_the_heads_next_look() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    tasks = [waiter(admission, slots, order, f"gui-{i}") for i in range(3)]
    await settle()
    slots.free += 1  # no freed(): another worker's slot
    await asyncio.wait_for(tasks[0], 0.5)
    assert order == ["gui-0"]
    tries = slots.tries
    await asyncio.sleep(0.12)
    assert slots.tries - tries <= 3  # only the head looks, about every 50 ms
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    assert not admission.busy(MODEL)


async def test_a_keys_backlog_lets_another_key_of_the_class_pass() -> None:
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    admission.served(MODEL, 0.2)
    tasks = [waiter(admission, slots, order, f"a-{i}", key="a") for i in range(3)]
    await settle()
    tasks.append(waiter(admission, slots, order, "b-0", key="b"))
    await settle()
    for _ in range(4):
        slots.free += 1
        admission.freed()
        await settle()
    await asyncio.gather(*tasks)
    assert order == ["a-0", "b-0", "a-1", "a-2"]


async def test_a_look_that_finds_a_slot_lets_the_next_look_too() -> None:
    """Two slots appear elsewhere (a breaker closes, another worker finishes): both are taken at the
    first look, not one per look."""
    admission, slots, order = Admission(aging_s=2.0, retry_after_s=2), Slots(), []
    tasks = [waiter(admission, slots, order, f"gui-{i}") for i in range(3)]
    await settle()
    slots.free += 2
    await asyncio.wait_for(asyncio.gather(tasks[0], tasks[1]), 0.08)
    assert order == ["gui-0", "gui-1"]
    tasks[2].cancel()
    await asyncio.gather(tasks[2], return_exceptions=True)
