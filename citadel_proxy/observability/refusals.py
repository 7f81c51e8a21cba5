"""Requests refused before their pipeline ran: counted, logged with repeats summarised, and audited.

Each refusal (bad or missing key, bad body, unknown model, too large, unavailable, too many failed
authentications) is counted at once in `citadel_requests_total` (model `other`: none was accepted) and
`citadel_refused_requests_total`. Refusals of one client address, reason, route and key within
`audit.refusal_interval_s` form a group: the first writes its access line; when the interval ends the
group becomes one metadata-only audit record (how many, first and last time) and, when more came, one
line "N more like this in the last T s". A flood costs a few lines and records per interval, never one
per request, and at most `audit.refusal_max_groups` groups are held: past them a refusal joins its
reason's overflow group, whose client and route are "*".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from citadel_proxy.audit.records import new_id
from citadel_proxy.audit.refusals import RefusalRecord, encode_refusal
from citadel_proxy.audit.sink import AuditSink
from citadel_proxy.config.schema import AuditOptions
from citadel_proxy.observability.logs import log_refusal, log_repeats
from citadel_proxy.observability.metrics import OTHER_MODEL, Metrics

log = logging.getLogger(__name__)

OVERFLOW = "*"
# The metrics route label of a path no route matched: raw paths would make the label set unbounded.
UNMATCHED_ROUTE = "unmatched"

GroupKey = tuple[str, str, str, str | None]  # client address, reason, route, key name


@dataclass(slots=True)
class _Group:
    first_at: datetime
    last_at: datetime
    started: float  # time.monotonic(), for the summary's span
    status: int
    request_id: str
    count: int = 1


class Refusals:
    """One worker's refusals of the current interval; `flush` hands them to the audit sink and the log."""

    def __init__(self, sink: AuditSink, metrics: Metrics, *, interval_s: float, max_groups: int) -> None:
        self._sink = sink
        self._metrics = metrics
        self._interval_s = interval_s
        self._max_groups = max_groups
        self._groups: dict[GroupKey, _Group] = {}

    def refused(
        self,
        *,
        route: str,
        label: str,
        client: str,
        status: int,
        reason: str,
        key_name: str | None,
        request_id: str,
        model: str = "",
        started: float | None = None,
    ) -> None:
        """One refused request; `label` is its route as a bounded metrics label (a template); `model` as
        the client named it, for the access line."""
        self._count(label, status, reason)
        key: GroupKey = (client, reason, route, key_name)
        group = self._groups.get(key)
        if group is None and len(self._groups) >= self._max_groups:
            key = (OVERFLOW, reason, OVERFLOW, None)
            group = self._groups.get(key)
        now = datetime.now(UTC)
        if group is not None:
            group.count += 1
            group.last_at = now
            return
        self._groups[key] = _Group(now, now, time.monotonic(), status, request_id)
        log_refusal(request_id, route, client, status, reason, key=key_name, model=model, started=started)

    def _count(self, label: str, status: int, reason: str) -> None:
        m = self._metrics
        m.requests.labels(label, OTHER_MODEL, str(status)).inc()
        m.refused.labels(label, reason).inc()
        if status == 429:
            m.rate_limited.labels(label).inc()

    def flush(self) -> None:
        """The interval ended: one audit record per group, and a summary line for each that repeated."""
        groups, self._groups = self._groups, {}
        now = time.monotonic()
        for (client, reason, route, key_name), group in groups.items():
            record = RefusalRecord(
                id=new_id(),
                first_at=group.first_at,
                last_at=group.last_at,
                count=group.count,
                client=client or None,
                route=route,
                status=group.status,
                reason=reason,
                key_name=key_name,
                request_id=group.request_id,
            )
            self._sink.offer_encoded(encode_refusal(record))
            if group.count > 1:
                log_repeats(
                    route, client, group.status, reason, key_name, group.count - 1, now - group.started
                )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                self.flush()
            except Exception:
                # A bug here must not end the flushing: the next intervals' refusals would pile up.
                log.exception("refusals could not be flushed")


async def open_refusals(
    options: AuditOptions, sink: AuditSink, metrics: Metrics, stack: contextlib.AsyncExitStack
) -> Refusals:
    """Refusals flushed every interval; `stack` flushes the last ones (open it after the audit sink)."""
    refusals = Refusals(
        sink, metrics, interval_s=options.refusal_interval_s, max_groups=options.refusal_max_groups
    )
    task = asyncio.create_task(refusals.run(), name="refusals-flush")

    async def close() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        refusals.flush()

    stack.push_async_callback(close)
    return refusals
