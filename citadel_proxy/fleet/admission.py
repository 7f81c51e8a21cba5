"""Waiting in the gateway for a slot: one queue per model in each worker, the higher class first.

A request that finds every backend that could serve its model at `max_concurrent` waits here rather than
in Ollama (a FIFO). Its rank is fixed when it arrives: `arrival - priority * aging_s`, the smallest first.
A class `p` request is therefore passed only by requests of class `q > p` that arrived less than
`(q - p) * aging_s` after it: no class starves. Only the head of a queue tries to start; it is woken when
this worker frees a slot, and looks again every `_POLL_S` for slots freed by other workers or gateways
(slots are shared through Redis; the queues are not).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from citadel_proxy import errors

_POLL_S = 0.05
T = TypeVar("T")
# Weight of the newest sample in the moving average of a model's service time.
_ALPHA = 0.2
# The turn a key's queued request takes while no service time of its model is known yet.
_DEFAULT_SERVICE_S = 0.1
_MAX_TURNS = 10_000


@dataclass(order=True, slots=True)
class _Waiter:
    rank: float
    seq: int
    woken: asyncio.Event = field(compare=False, default_factory=asyncio.Event)
    gone: bool = field(compare=False, default=False)


@dataclass(slots=True)
class _Queue:
    heap: list[_Waiter] = field(default_factory=list)
    waiting: int = 0

    def head(self) -> _Waiter | None:
        while self.heap and self.heap[0].gone:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else None

    def ahead_of(self, rank: float) -> int:
        return sum(1 for w in self.heap if not w.gone and w.rank < rank)


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
        return queue is not None and queue.head() is not None

    def served(self, model: str, seconds: float) -> None:
        old = self._service_s.get(model)
        self._service_s[model] = seconds if old is None else old + _ALPHA * (seconds - old)

    def freed(self) -> None:
        for queue in self._queues.values():
            head = queue.head()
            if head is not None:
                head.woken.set()

    def _waited(self, klass: str, seconds: float) -> None:
        old = self.waited_s.get(klass)
        self.waited_s[klass] = seconds if old is None else old + _ALPHA * (seconds - old)

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
        queue = self._queues.setdefault(model, _Queue())
        arrived = time.monotonic()
        waiter = _Waiter(
            self._turn((model, klass, key), model, arrived) - priority * self.aging_s, next(self._seq)
        )
        # Counting those ahead walks the queue: only when waiting behind all of them could miss.
        estimate = self.estimate_s(model, queue.waiting, capacity)
        if estimate is not None and estimate > max_queue_s:
            estimate = self.estimate_s(model, queue.ahead_of(waiter.rank), capacity)
        if max_queue_s <= 0 or (estimate is not None and estimate > max_queue_s):
            raise self._refused(model, estimate)
        heapq.heappush(queue.heap, waiter)
        queue.waiting += 1
        self.waiting[klass] = self.waiting.get(klass, 0) + 1
        try:
            async with asyncio.timeout(max_queue_s):
                while True:
                    if queue.head() is waiter:
                        got = await start()
                        if got is not None:
                            waited = time.monotonic() - arrived
                            self._waited(klass, waited)
                            return got, waited
                        waiter.woken.clear()
                        # Slots other workers free wake nobody here: the head looks again shortly.
                        await _wait(waiter.woken, _POLL_S)
                    else:
                        waiter.woken.clear()
                        await waiter.woken.wait()
        except TimeoutError:
            raise self._refused(
                model, self.estimate_s(model, queue.ahead_of(waiter.rank), capacity)
            ) from None
        finally:
            waiter.gone = True
            queue.waiting -= 1
            self.waiting[klass] -= 1
            nxt = queue.head()
            if nxt is not None:
                nxt.woken.set()  # its turn: it may find a slot free too

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


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
