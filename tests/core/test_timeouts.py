"""The timeout sweeper: due items fire once, others never, and it sleeps when nothing is watched; a task's
deadline on it keeps asyncio.timeout's contract (whose cancellation it was, the task's count of them)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from citadel_proxy.timeouts import TaskDeadline, TimeoutSweeper


class Item:
    def __init__(self, at: float, *, broken: bool = False) -> None:
        self.at = at
        self.fired = 0
        self.broken = broken

    def due(self, now: float) -> bool:
        return now >= self.at

    def expire(self) -> None:
        self.fired += 1
        if self.broken:
            raise RuntimeError("a bug in one item")


async def test_due_items_fire_once_and_the_rest_wait(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    sweeper = TimeoutSweeper(period_s=0.01)
    soon, broken, later, dropped = (
        Item(loop.time() + 0.02),
        Item(loop.time() + 0.02, broken=True),
        Item(loop.time() + 60),
        Item(loop.time()),
    )
    for item in (soon, broken, later, dropped):
        sweeper.watch(item)
    sweeper.unwatch(dropped)
    with caplog.at_level(logging.ERROR):
        await asyncio.sleep(0.1)
    assert (soon.fired, broken.fired, later.fired, dropped.fired) == (1, 1, 0, 0)
    assert "a timeout failed to fire" in caplog.text  # logged, and the others still fired
    sweeper.unwatch(later)
    await asyncio.sleep(0.03)
    assert sweeper._timer is None  # nothing watched: no more wake-ups
    again = Item(loop.time())
    sweeper.watch(again)  # and it wakes up again for the next one
    await asyncio.sleep(0.05)
    assert again.fired == 1
    sweeper.close()


async def test_an_item_that_watches_itself_again_keeps_one_sweep_running() -> None:
    """As a stream does when its header grace passes: its deadline is still watched afterwards."""
    loop = asyncio.get_running_loop()
    sweeper = TimeoutSweeper(period_s=0.01)
    sweeps = 0
    sweep = sweeper._sweep

    def counted() -> None:
        nonlocal sweeps
        sweeps += 1
        sweep()

    sweeper._sweep = counted  # type: ignore[method-assign]

    class Again(Item):
        def expire(self) -> None:
            super().expire()
            if self.fired < 5:
                self.at = loop.time()
                sweeper.watch(self)

    sweeper.watch(Item(loop.time() + 60))  # keeps the sweeps going
    item = Again(loop.time())
    sweeper.watch(item)
    await asyncio.sleep(0.2)
    assert item.fired == 5
    assert sweeps <= 25  # one sweep chain at 0.01 s over 0.2 s, not one more per re-watch
    sweeper.close()


async def _under_deadline(sweeper: TimeoutSweeper, timeout_s: float, work: asyncio.Future[None]) -> str:
    """What a task running `work` under a deadline saw: 'deadline', 'cancelled' or 'done'."""
    task = asyncio.current_task()
    assert task is not None
    deadline = TaskDeadline(sweeper, task, timeout_s)
    try:
        await work
    except asyncio.CancelledError:
        if deadline.end():
            return f"deadline, cancelling {task.cancelling()}"
        raise
    finally:
        deadline.end()
    return "done"


async def test_a_task_deadline_cancels_the_task_and_takes_the_cancellation_back() -> None:
    sweeper = TimeoutSweeper(period_s=0.01)
    hang = asyncio.get_running_loop().create_future()
    assert await _under_deadline(sweeper, 0.02, hang) == "deadline, cancelling 0"
    assert not sweeper._watched and hang.cancelled()


async def test_a_task_deadline_not_reached_is_no_longer_watched() -> None:
    sweeper = TimeoutSweeper(period_s=0.01)
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    assert await _under_deadline(sweeper, 60, done) == "done"
    assert not sweeper._watched


async def test_a_cancellation_of_someone_else_is_theirs_even_past_the_deadline() -> None:
    sweeper = TimeoutSweeper(period_s=60)
    task = asyncio.current_task()
    assert task is not None
    deadline = TaskDeadline(sweeper, task, 0.0)
    deadline.expire()  # the sweep fired...
    task.cancel()  # ...as the client left: two cancellations, one of them the deadline's
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            assert not deadline.end() and task.cancelling() == 1
            raise
    task.uncancel()


async def test_a_task_deadline_ended_before_its_sweep_never_fires() -> None:
    sweeper = TimeoutSweeper(period_s=0.01)
    task = asyncio.current_task()
    assert task is not None
    deadline = TaskDeadline(sweeper, task, 0.0)
    assert not deadline.end() and not deadline.end()
    await asyncio.sleep(0.03)
    assert task.cancelling() == 0 and not deadline.expired


class Counted(Item):
    def __init__(self, at: float, looked: list[Item]) -> None:
        super().__init__(at)
        self.looked = looked

    def due(self, now: float) -> bool:
        self.looked.append(self)
        return super().due(now)


async def test_a_sweep_looks_at_no_more_than_its_share_the_longest_unseen_first() -> None:
    """Thousands of open streams: a sweep looks at `per_sweep` of them, so the loop is never held for
    all of them at once; every one is still looked at within a round of sweeps."""
    loop = asyncio.get_running_loop()
    sweeper = TimeoutSweeper(period_s=60, per_sweep=2)  # swept by hand below
    looked: list[Item] = []
    waiting = [Counted(loop.time() + 60, looked) for _ in range(3)]
    due = [Counted(loop.time(), looked) for _ in range(2)]
    for item in (waiting[0], due[0], waiting[1], waiting[2], due[1]):
        sweeper.watch(item)

    rounds = []
    for _ in range(3):
        sweeper._sweep()
        rounds.append(len(looked))
        looked.clear()

    assert rounds == [2, 2, 2]
    assert [item.fired for item in due] == [1, 1]  # within one round of the five: three sweeps
    assert list(sweeper._watched) == [waiting[1], waiting[2], waiting[0]]  # looked at longest ago first
    sweeper.close()


async def test_an_item_unwatched_by_another_expiring_in_the_same_sweep_does_not_fire() -> None:
    loop = asyncio.get_running_loop()
    sweeper = TimeoutSweeper(period_s=60)
    second = Item(loop.time())

    class Unwatches(Item):
        def expire(self) -> None:
            super().expire()
            sweeper.unwatch(second)  # as a stream's end unwatches its upstream's silence limit

    first = Unwatches(loop.time())
    sweeper.watch(first)
    sweeper.watch(second)
    sweeper._sweep()

    assert (first.fired, second.fired) == (1, 0)
    assert not sweeper._watched
    sweeper.close()
