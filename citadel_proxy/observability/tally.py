"""Per-request counts kept as plain numbers on the event loop, folded into the Prometheus series in bulk.

prometheus-client's `Counter.inc` and `Histogram.observe` check their arguments and take a lock for every
value (in multiprocess mode they write a memory-mapped file too); a finished request recorded five
values, most of the metrics stage's cost (and the fleet's series four more). A request here adds to plain
numbers; `Tally.fold` moves them into the series: before every collection of the registry (a scrape of
this process, a test's `get_sample_value`) and every `FOLD_EVERY_S` while the app runs, so that with
several workers each one's values reach the shared files within that time, whichever worker is scraped.

Only the event loop's thread adds and folds: a fold asked for from another thread (a collection in a
thread pool) is left to the next one on the loop, since an increment and a fold in two threads could
lose a count between them.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

# How stale another worker's values may be in a scrape (seconds): far under any scrape interval.
FOLD_EVERY_S = 1.0


class CounterTally:
    """Increments of one counter child (one label set)."""

    __slots__ = ("_child", "pending")

    def __init__(self, child: Counter | Gauge) -> None:
        self._child = child
        self.pending: float = 0

    def inc(self, amount: float = 1) -> None:
        self.pending += amount

    def fold(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0
            self._child.inc(amount)


class GaugeTally(CounterTally):
    """Changes of one gauge child (requests in flight): its value lags by at most a fold, as a counter's."""

    __slots__ = ()

    def dec(self, amount: float = 1) -> None:
        self.pending -= amount


class HistogramTally:
    """Observations of one histogram child, counted in its buckets as the child itself counts them."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        # The child's upper bounds, +Inf last: a value goes to the first bucket whose bound it does
        # not exceed, as `Histogram.observe` does (the series are cumulative only when collected).
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        self._counts = [0] * len(counts)
        total, self._sum = self._sum, 0.0
        # prometheus-client has no public call for many observations at once: its buckets and sum are
        # the values `observe` adds to (tests/observability/test_tally.py holds the two to the same
        # exposition, so a release that changes them fails there rather than in production).
        child: Any = self._child
        for bucket, count in zip(child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(total)


_Part = TypeVar("_Part", CounterTally, GaugeTally, HistogramTally)


class Tally:
    """Every counter and histogram tally of an app; a registry collector that folds them when collected.

    Registered on the registry before the series it folds into, so that a collection folds first.
    """

    def __init__(self) -> None:
        # By the child they fold into: a stage built again (a reload) gets the tallies it had, rather
        # than adding more for the same series.
        self._parts: dict[object, CounterTally | GaugeTally | HistogramTally] = {}
        self._thread = threading.get_ident()
        self._timer: asyncio.TimerHandle | None = None

    def counter(self, child: Counter) -> CounterTally:
        return self._part(child, CounterTally)

    def gauge(self, child: Gauge) -> GaugeTally:
        return self._part(child, GaugeTally)

    def histogram(self, child: Histogram) -> HistogramTally:
        return self._part(child, HistogramTally)

    def _part(self, child: Any, kind: type[_Part]) -> _Part:
        """`child`'s tally, made the first time it is asked for."""
        part = self._parts.get(child)
        if type(part) is not kind:
            part = self._parts[child] = kind(child)
        return part

    def fold(self) -> None:
        if threading.get_ident() != self._thread:
            return
        for part in self._parts.values():
            part.fold()

    def collect(self) -> Iterable[Metric]:
        """The registry's collection: fold, and add no series of its own."""
        self.fold()
        return ()

    def start(self, every_s: float = FOLD_EVERY_S) -> None:
        """Fold every `every_s` on the running loop, from its thread, until `stop`."""
        loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

        def again() -> None:
            self.fold()
            self._timer = loop.call_later(every_s, again)

        self._timer = loop.call_later(every_s, again)

    def stop(self) -> None:
        """No more timed folds; one last fold of what is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.fold()
