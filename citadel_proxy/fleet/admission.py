"""Waiting in the gateway for a slot: one queue per model in each worker, the higher class first.

A request that finds every backend that could serve its model at `max_concurrent` waits here rather than
in Ollama (a FIFO). Its rank is fixed when it arrives: `arrival - priority * aging_s`, the smallest first.
A class `p` request is therefore passed only by requests of class `q > p` that arrived less than
`(q - p) * aging_s` after it: no class starves.

Each slot this worker frees wakes one waiter, the best, taken out of the queue to try for it; one that
does not get it goes back to its place. Capacity that appears without a slot freed here (slots freed by
other workers or gateways, shared through Redis while the queues are not; a breaker that closes) is
found by one timer per queue: every `_POLL_S` it wakes the best waiter to look, and a look that finds
a slot wakes the next to look too. The same timer refuses the waiters whose deadline passed. A waiting
request therefore costs one future and a place in a sorted list: no timer of its own, and no wake-up
but the one that starts it.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from citadel_proxy import errors

_POLL_S = 0.05
T = TypeVar("T")
# Weight of the newest sample in the moving average of a model's service time.
_ALPHA = 0.2
# The turn a key's queued request takes while no service time of its model is known yet.
_DEFAULT_SERVICE_S = 0.1
_MAX_TURNS = 10_000

# Why a waiter's future is resolved (it is then out of the list): its deadline passed, a slot of this
# worker was freed, or the timer's look.
_EXPIRED, _FREED, _LOOK = 0, 1, 2

# A waiter in its queue: (-rank, -seq, future), kept sorted so that the best is last (popped in O(1),
# found by bisect, compared in C: rank and seq are never equal, so futures are never compared).
_Entry = tuple[float, int, "asyncio.Future[int]"]


class _Queue:
    __slots__ = ("deadlines", "entries", "spare", "timer", "timer_at", "waiting")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        # (deadline on the loop's clock, -rank, -seq) of the waiters, the soonest first; those of waiters
        # gone are dropped when they come first.
        self.deadlines: list[tuple[float, float, int]] = []
        # Requests inside `wait`: those in `entries` and those woken that have not finished trying.
        self.waiting = 0
        # Slots freed while every waiter was already woken: the next to queue tries at once.
        self.spare = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def enter(
        self, loop: asyncio.AbstractEventLoop, rank: float, seq: int, deadline: float
    ) -> asyncio.Future[int]:
        """Put the waiter (-rank, -seq) in its place; the future it waits on."""
        future = loop.create_future()
        bisect.insort(self.entries, (rank, seq, future))
        heapq.heappush(self.deadlines, (deadline, rank, seq))
        if deadline < self.timer_at:
            self._arm(loop, min(deadline, loop.time() + _POLL_S))
        if self.spare:
            self.spare -= 1
            self.wake(_FREED)
        return future

    def leave(self, future: asyncio.Future[int] | None, rank: float, seq: int, woken: int) -> None:
        """The waiter is done: out of the list if still there, and its wake passed on if it had one.

        `future`: the one it was waiting on when it was cancelled, else None; `woken`: why it was woken,
        when it did not take a slot (a slot may be free), else 0."""
        self.waiting -= 1
        if future is not None:
            if future.done() and not future.cancelled() and future.result():
                woken = future.result()  # woken, then cancelled before it could try
            else:
                i = self.find(rank, seq)
                if i >= 0:
                    del self.entries[i]
        if not self.waiting:
            self.spare = 0
        elif woken and not self.wake(woken) and woken == _FREED:
            self.spare += 1

    def wake(self, why: int) -> bool:
        """Take the best waiter out to try for a slot; False when none is in the list."""
        entries = self.entries
        while entries:
            future = entries.pop()[2]
            if not future.done():  # else cancelled: its request is unwinding
                future.set_result(why)
                return True
        return False

    def find(self, key: float, seq: int) -> int:
        """The index of the waiter (-rank, -seq) in `entries`, or -1 when it is not there."""
        entries = self.entries
        i = bisect.bisect_left(entries, (key, seq))
        if i < len(entries) and entries[i][1] == seq and entries[i][0] == key:
            return i
        return -1

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = loop.call_at(at, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refuse the waiters past their deadline, and wake the best to look for a slot."""
        self.timer, self.timer_at = None, math.inf
        now = loop.time()
        deadlines = self.deadlines
        while deadlines:
            deadline, rank, seq = deadlines[0]
            i = self.find(rank, seq)
            if i < 0:
                heapq.heappop(deadlines)  # started, refused or gone (woken ones queue their deadline again)
            elif deadline <= now:
                heapq.heappop(deadlines)
                future = self.entries.pop(i)[2]
                if not future.done():
                    future.set_result(_EXPIRED)
            else:
                break
        self.wake(_LOOK)
        if self.waiting:
            self._arm(loop, min(deadlines[0][0], now + _POLL_S) if deadlines else now + _POLL_S)


class Admission:
    """This worker's queues, and the recent service time of each model (from slot taken to slot freed)."""

    def __init__(self, aging_s: float, retry_after_s: int) -> None:
        self.aging_s = aging_s
        self.retry_after_s = retry_after_s
        self._queues: dict[str, _Queue] = {}
        self._service_s: dict[str, float] = {}
        self._seq = itertools.count()
        # (model, class, key) -> the virtual arrival of the key's last queued request: a key's own backlog
        # pushes its later requests back by a service time each, so keys of one class take turns.
        self._turns: dict[tuple[str, str, str], float] = {}
        # Per class (pipeline): requests waiting now, and a moving average of the wait in seconds.
        self.waiting: dict[str, int] = {}
        self.waited_s: dict[str, float] = {}

    def busy(self, model: str) -> bool:
        """Whether requests for `model` already wait: a newcomer queues behind them, whatever is free."""
        queue = self._queues.get(model)
        return queue is not None and queue.waiting > 0

    def served(self, model: str, seconds: float) -> None:
        old = self._service_s.get(model)
        self._service_s[model] = seconds if old is None else old + _ALPHA * (seconds - old)

    def freed(self) -> None:
        """A slot of this worker is free: the best waiter of each model tries for it."""
        for queue in self._queues.values():
            if queue.waiting and not queue.wake(_FREED) and queue.spare < queue.waiting:
                queue.spare += 1

    def estimate_s(self, model: str, ahead: int, capacity: int) -> float | None:
        """When a request with `ahead` requests in front of it would start; None: no service seen yet."""
        service = self._service_s.get(model)
        if service is None:
            return None
        return (ahead // max(1, capacity) + 1) * service

    async def wait(
        self,
        model: str,
        klass: str,
        key: str,
        priority: int,
        max_queue_s: float,
        capacity: int,
        start: Callable[[], Awaitable[T | None]],
    ) -> tuple[T, float]:
        """Wait until `start()` (take a slot) gives one; it and the seconds waited.

        Refused at once (503 with Retry-After) when the estimated start misses `max_queue_s`, and after
        `max_queue_s` of waiting when the estimate was wrong.
        """
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = _Queue()
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        rank = -(self._turn((model, klass, key), model, arrived) - priority * self.aging_s)
        seq = -next(self._seq)
        # Those ahead: the woken ones still trying, and those after this rank in the list.
        estimate = self.estimate_s(
            model, queue.waiting - bisect.bisect_right(queue.entries, (rank, seq)), capacity
        )
        if max_queue_s <= 0 or (estimate is not None and estimate > max_queue_s):
            raise self._refused(model, estimate)
        deadline = arrived + max_queue_s
        queue.waiting += 1
        waiting = self.waiting
        waiting[klass] = waiting.get(klass, 0) + 1
        future: asyncio.Future[int] | None = None
        woken = 0  # why it was woken while it tries (a slot may be free: if not taken, the next tries)
        try:
            while True:
                future = queue.enter(loop, rank, seq, deadline)
                woken = await future
                future = None
                if not woken:
                    raise self._late(model, queue, rank, seq, capacity)
                got = await start()
                if got is not None:
                    if woken == _LOOK:
                        queue.wake(_LOOK)  # capacity came from elsewhere: there may be more
                    woken = 0
                    waited = loop.time() - arrived
                    old = self.waited_s.get(klass)
                    self.waited_s[klass] = waited if old is None else old + _ALPHA * (waited - old)
                    return got, waited
                woken = 0
                if loop.time() >= deadline:
                    raise self._late(model, queue, rank, seq, capacity)
        finally:
            waiting[klass] -= 1
            queue.leave(future, rank, seq, woken)

    def _late(
        self, model: str, queue: _Queue, rank: float, seq: int, capacity: int
    ) -> errors.ServiceUnavailable:
        """Refused after waiting (out of the list, still counted in `waiting`): the estimate from now."""
        ahead = queue.waiting - 1 - bisect.bisect_right(queue.entries, (rank, seq))
        return self._refused(model, self.estimate_s(model, ahead, capacity))

    def _turn(self, turn: tuple[str, str, str], model: str, now: float) -> float:
        if len(self._turns) > _MAX_TURNS:
            self._turns = {k: at for k, at in self._turns.items() if at > now}
        before = self._turns.get(turn)
        at = now if before is None else max(now, before + self._service_s.get(model, _DEFAULT_SERVICE_S))
        self._turns[turn] = at
        return at

    def _refused(self, model: str, estimate: float | None) -> errors.ServiceUnavailable:
        retry = max(self.retry_after_s, math.ceil(estimate or 0))
        return errors.ServiceUnavailable(
            f"every backend that has {model} is running all it can and the queue would not start this "
            "request in time; try again shortly",
            code="backends_busy",
            headers={"Retry-After": str(retry)},
        )
