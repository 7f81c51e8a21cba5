"""The audit trail's Prometheus series, refreshed from the sink's counters by a small task."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from citadel_proxy.audit.sink import AuditSink

_OUTCOMES = ("written", "spooled", "replayed", "rejected", "lost", "dead_lettered")
_REFRESH_S = 1.0


class AuditSeries:
    def __init__(self, registry: CollectorRegistry, sink: AuditSink) -> None:
        self._sink = sink
        self._seen = dict.fromkeys(_OUTCOMES, 0)
        self.queue_depth = Gauge(
            "citadel_audit_queue_depth",
            "Audit records queued in memory.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spooled = Gauge(
            "citadel_audit_spooled_records",
            "Audit records waiting in the local spool for PostgreSQL.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.records = Counter(
            "citadel_audit_records_total",
            "Audit records by what happened to them (lost must stay 0; dead_lettered: see dead-letters).",
            ["outcome"],
            registry=registry,
        )
        for outcome in _OUTCOMES:
            self.records.labels(outcome)

    def refresh(self) -> None:
        snapshot = self._sink.snapshot()
        for outcome in _OUTCOMES:
            delta = snapshot[outcome] - self._seen[outcome]
            if delta > 0:
                self.records.labels(outcome).inc(delta)
                self._seen[outcome] = snapshot[outcome]
        self.queue_depth.set(snapshot["queue_depth"])
        self.spooled.set(self._sink.spool_waiting)


async def export_audit_metrics(
    registry: CollectorRegistry, sink: AuditSink, stack: contextlib.AsyncExitStack
) -> None:
    series = AuditSeries(registry, sink)

    async def refresh_forever() -> None:
        while True:
            series.refresh()
            await asyncio.sleep(_REFRESH_S)

    task = asyncio.create_task(refresh_forever())

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        series.refresh()

    stack.push_async_callback(stop)
