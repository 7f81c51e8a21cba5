"""Where records go: a bounded queue and a batching writer to PostgreSQL, with the spool as fallback.

    submit ──► queue (healthy, room left) ──► writer ──► PostgreSQL (one statement per batch)
       │                                        │ fails
       └──► spool (down, queue full, closing) ◄─┘        recovery: spool ──► PostgreSQL, in order

Records go to the queue only while the database is healthy and the spool is empty, so spooled records
are replayed before newer ones are written. "PostgreSQL" stands for the store: with `database: null` it is
the embedded SQLite file (audit/sqlite_store.py), behind the same queue and spool.
A record that keeps failing while the store takes others is set aside after `max_attempts`
(deadletter.py), so it never holds back the records behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from citadel_proxy.audit.bounds import Limits, bounded
from citadel_proxy.audit.deadletter import Attempts, set_aside
from citadel_proxy.audit.errors import AuditError, StoreRejected, StoreUnavailable
from citadel_proxy.audit.record_queue import RecordQueue
from citadel_proxy.audit.records import AuditRecord, record_id
from citadel_proxy.audit.spool import Spool, claim_orphans, quarantine, read_segment
from citadel_proxy.background import mark_seen
from citadel_proxy.memory import MMAP_THRESHOLD_BYTES as TRIM_AFTER_BYTES
from citadel_proxy.memory import trim_soon

if TYPE_CHECKING:
    from citadel_proxy.audit.conversations import Owners
    from citadel_proxy.audit.ports import AuditReader, AuditStore

log = logging.getLogger(__name__)

Prepare = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class AuditMetrics:
    written: int = 0  # stored in PostgreSQL (or SQLite, without a database) by the writer
    spooled: int = 0  # appended to the spool, waiting for PostgreSQL
    replayed: int = 0  # moved from the spool to PostgreSQL
    rejected: int = 0  # refused by PostgreSQL for their content: kept in rejected.jsonl
    lost: int = 0  # neither stored nor spooled (the disk failed): must stay 0
    dead_lettered: int = 0  # failed max_attempts times while PostgreSQL took others: in dead-letter.jsonl


class AuditSink:
    """Takes records from the request path without ever waiting for the database."""

    def __init__(
        self,
        spool: Spool,
        store: AuditStore,
        *,
        batch_size: int,
        queue_size: int,
        retry_s: float,
        prepare: Prepare | None = None,
        linger_s: float = 0.0,
        spool_first: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.metrics = AuditMetrics()
        self.limits = limits or Limits()
        # Set by open_audit: what the management routes read (PostgreSQL, else the SQLite file).
        self.queries: AuditReader | None = None
        # Set by open_audit: who owns a conversation (PostgreSQL, else files beside the spool).
        self.owners: Owners | None = None
        self._spool = spool
        self._store = store
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._spool_first = spool_first
        self._retry_s = retry_s
        self._prepare = prepare
        # Records encoded (`encode_record`) from here on: the queue, the spool and the batches carry bytes.
        self._queue = RecordQueue(queue_size)
        self._healthy = prepare is None and spool.is_empty()
        self._closing = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def database_failing(self) -> bool:
        """The store cannot take records now (down, or not yet migrated)."""
        return not self._healthy

    @property
    def spool_waiting(self) -> int:
        """Records in the spool still to be written to the store."""
        m = self.metrics
        return max(0, m.spooled - m.replayed - m.rejected - m.dead_lettered)

    def snapshot(self) -> dict[str, int]:
        return asdict(self.metrics) | {"queue_depth": self.queue_depth}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._recover_loop())]
        if not self._healthy:
            self._wake.set()  # leftovers from a previous run, or migrations to retry: start now

    async def submit(self, record: AuditRecord) -> None:
        """Queue the record, or return once it is on disk; AuditError if neither was possible."""
        waiter = self.offer(record)
        if waiter is not None:
            # shield: a client gone mid-write must not cancel the write itself.
            await asyncio.shield(waiter)

    def offer(self, record: AuditRecord) -> asyncio.Task[None] | None:
        """Like submit, without waiting: for paths that cannot await (a cancelled request)."""
        return self.offer_encoded(bounded(record, self.limits.max_record_bytes))

    def offer_encoded(self, encoded: bytes) -> asyncio.Task[None] | None:
        """`offer` for a record already encoded (a refusal record, `audit.refusals`)."""
        if self._healthy and not self._closing and not self._spool_first and self._queue.offer(encoded):
            return None
        task = asyncio.create_task(self._spool_records([encoded]))
        self._background.add(task)
        task.add_done_callback(mark_seen)
        task.add_done_callback(self._background.discard)
        return task

    async def _spool_records(self, records: Sequence[bytes]) -> None:
        try:
            await self._spool.append(records)
        except OSError as exc:
            self.metrics.lost += len(records)
            log.error("audit records lost: neither PostgreSQL nor the spool could take them: %s", exc)
            raise AuditError(f"the audit spool cannot be written: {exc}") from exc
        self.metrics.spooled += len(records)
        self._wake.set()

    async def _write_loop(self) -> None:
        while not self._queue.finished:
            # One batch per call: its records (megabytes after a large request) are let go of when it
            # returns, not kept by this frame while it waits for the next record.
            await self._write_next()

    async def _write_next(self) -> None:
        queue = self._queue
        await queue.wait()
        if self._linger_s and not queue.stopped and len(queue) < self._batch_size:
            # At low load each record would cost a round trip of its own: let a few more arrive.
            await asyncio.sleep(self._linger_s)
        batch = queue.take(self._batch_size)
        if batch:
            await self._write(batch)
            if sum(map(len, batch)) >= TRIM_AFTER_BYTES:
                # Written after the response (whose trim may have run already): what encoding and
                # sending the batch left in the heap is free once this returns.
                trim_soon()

    async def _write(self, batch: list[bytes]) -> None:
        if self._healthy:
            parts = list(batches(batch, len(batch), self.limits.max_batch_bytes))
            for n, part in enumerate(parts):
                try:
                    await self._insert(part)
                except StoreUnavailable as exc:
                    log.warning("audit database unavailable, spooling records: %s", exc)
                    self._healthy = False
                    batch = [record for rest in parts[n:] for record in rest]
                    break
                self.metrics.written += len(part)
            else:
                return
        # Everything still queued follows this batch to the spool, so order is kept.
        batch += self._queue.take(None)
        # A failure was counted as lost and logged in _spool_records; the writer must keep running.
        with contextlib.suppress(AuditError):
            await self._spool_records(batch)

    async def _insert(self, batch: Sequence[bytes]) -> None:
        try:
            await self._store.insert(batch)
        except StoreRejected:
            # One bad record must not block the others: find it by storing them one at a time.
            for record in batch:
                try:
                    await self._store.insert([record])
                except StoreRejected as exc:
                    log.error("audit record %s refused by PostgreSQL, kept aside: %s", record_id(record), exc)
                    kept = await asyncio.to_thread(quarantine, self._spool.slot.path, [record])
                    self.metrics.rejected += kept

    async def _recover_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._retry_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._closing:
                return  # close() makes the last move itself
            self._wake.clear()
            if self._spool_first and self._linger_s:
                await asyncio.sleep(self._linger_s)  # let a burst gather in one segment
            try:
                await self._recover()
            except StoreUnavailable as exc:
                # (With durability spool the writer never tries: this is where a failure shows.)
                self._healthy = False
                log.info("audit database still unavailable: %s", exc)
                await asyncio.sleep(self._retry_s)
            except AuditError as exc:
                log.error("audit recovery cannot proceed: %s", exc)
                await asyncio.sleep(self._retry_s)

    async def _recover(self) -> None:
        if self._prepare is not None:
            await self._prepare()
            self._prepare = None
        for path in await self._spool.seal():
            await self._replay(path)
            await self._spool.discard(path)
        own = self._spool.slot.path
        for slot in await asyncio.to_thread(claim_orphans, own.parent, own):
            try:
                for path in slot.segments(self._spool.prefix):
                    await self._replay(path)
                    await asyncio.to_thread(path.unlink)
            finally:
                slot.release()
        # No await between the check and the switch: no record can slip into the spool in between.
        if self._spool.is_empty():
            self._healthy = True
        else:
            self._wake.set()

    async def _replay(self, path: Path) -> None:
        segment = await asyncio.to_thread(read_segment, path)
        self.metrics.rejected += await asyncio.to_thread(quarantine, path.parent, segment.bad_lines)
        records = segment.records
        attempts = await asyncio.to_thread(Attempts.load, path.parent)
        if attempts:
            # Set aside before a crash kept this segment: they are in dead-letter.jsonl already.
            records = [r for r in records if attempts.count(record_id(r)) < self.limits.max_attempts]
        for chunk in batches(records, self._batch_size, self.limits.max_batch_bytes):
            try:
                await self._insert(chunk)
            except StoreUnavailable as exc:
                await self._isolate(chunk, attempts, exc)
            else:
                self.metrics.replayed += len(chunk)
        if attempts:
            await asyncio.to_thread(attempts.forget, map(record_id, segment.records))
        log.info("replayed %d audit records from %s", len(records), path.name)

    async def _isolate(self, chunk: list[bytes], attempts: Attempts, failure: StoreUnavailable) -> None:
        """A batch failed: if the store is down, wait (nobody's fault); if not, find who keeps failing."""
        if not await self._store_answers():
            raise failure
        for record in chunk:
            await self._replay_alone(record, attempts)

    async def _replay_alone(self, record: bytes, attempts: Attempts) -> None:
        rid = record_id(record)
        while True:
            try:
                await self._insert([record])
            except StoreUnavailable as exc:
                if not await self._store_answers():
                    raise
                tries = attempts.count(rid) + 1
                if tries >= self.limits.max_attempts:
                    # On disk before the count that skips it is: a crash in between lists it twice at worst.
                    where = await asyncio.to_thread(
                        set_aside, attempts.directory, rid, record, tries, str(exc)
                    )
                    self.metrics.dead_lettered += 1
                    log.error(
                        "audit record %s set aside in %s after %d failed writes: %s", rid, where, tries, exc
                    )
                await asyncio.to_thread(attempts.charge, rid)
                if tries >= self.limits.max_attempts:
                    return
                log.warning("audit record %s failed to store (attempt %d): %s", rid, tries, exc)
            else:
                self.metrics.replayed += 1
                return

    async def _store_answers(self) -> bool:
        """Whether the store takes writes at all: an empty batch is one round trip that stores nothing."""
        try:
            await self._store.insert([])
        except (StoreUnavailable, StoreRejected):
            return False
        return True

    async def close(self) -> None:
        """Drain the queue (to PostgreSQL, else the spool) and wait for every spool write."""
        if self._closing:
            return
        self._closing = True
        if self._tasks:
            self._queue.stop()
            await self._tasks[0]
            # Let a move in progress finish (a cancel between a batch's insert and its segment's removal
            # would leave the segment to be replayed again at the next start); cancel one that hangs.
            recovering = self._tasks[1]
            self._wake.set()
            await asyncio.wait({recovering}, timeout=self._retry_s * 5)
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._spool_first:
            # One last move to PostgreSQL; whatever it cannot take stays spooled for the next start.
            with contextlib.suppress(AuditError, TimeoutError):
                async with asyncio.timeout(self._retry_s * 5):
                    await self._recover()
        await self._spool.close()


def batches(records: Sequence[bytes], count: int, max_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive batches of at most `count` records and `max_bytes` bytes (a larger record alone)."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and (len(batch) >= count or size + len(record) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield batch
