"""The durable spool: append-only JSON-lines segments on local disk, fsync'd before an append returns.

Each process claims a slot folder with an exclusive `flock`, so several workers never share a file; the
kernel drops the lock when a process dies, and a survivor (or the restarted process) adopts the slot.
Concurrent appends are written and fsync'd together (group commit), so a burst costs a few fsyncs.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from citadel_proxy.audit.records import AuditRecord, encode_record
from citadel_proxy.audit.refusals import is_refusal, reencode_refusal

_decode = msgspec.json.Decoder(AuditRecord).decode


@dataclass(slots=True)
class Slot:
    path: Path
    lock_fd: int

    @classmethod
    def claim(cls, path: Path) -> Slot | None:
        path.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def segments(self, prefix: str) -> list[Path]:
        return sorted(self.path.glob(f"{prefix}-*.jsonl"))

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def claim_free_slot(root: Path) -> Slot:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for n in itertools.count():
        if (slot := Slot.claim(root / f"slot-{n}")) is not None:
            return slot
    raise AssertionError("unreachable")


def claim_orphans(root: Path, own: Path) -> list[Slot]:
    """Slots of processes that died (nobody holds their lock), to be replayed and released."""
    found = (Slot.claim(p) for p in sorted(root.glob("slot-*")) if p != own and p.is_dir())
    return [slot for slot in found if slot is not None]


@dataclass(slots=True)
class Segment:
    # Encoded records (`encode_record`) of the lines that decode as a whole record.
    records: list[bytes]
    # Lines that do not decode (a write torn by a crash): kept aside, never dropped silently.
    bad_lines: list[bytes]


def read_segment(path: Path) -> Segment:
    segment = Segment([], [])
    with path.open("rb") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                # Encoded again rather than kept as read: a line written by an older version gets the
                # fields added since, with their defaults, as the insert expects every one.
                encoded = reencode_refusal(line) if is_refusal(line) else encode_record(_decode(line))
            except msgspec.DecodeError:
                segment.bad_lines.append(line)
            else:
                segment.records.append(encoded)
    return segment


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segments in one slot; `seal` closes the active one so it can be replayed and removed."""

    def __init__(self, slot: Slot, *, prefix: str, segment_bytes: int) -> None:
        self.slot = slot
        self.prefix = prefix
        self._segment_bytes = segment_bytes
        self._sealed = slot.segments(prefix)
        last = self._sealed[-1].stem.rsplit("-", 1)[1] if self._sealed else "0"
        self._seq = int(last)
        self._fd: int | None = None
        self._active_path = slot.path
        self._active_size = 0
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()

    def is_empty(self) -> bool:
        """Nothing waiting, being written, or on disk. Synchronous, so callers can act on it atomically."""
        return not (self._pending or self._io_lock.locked() or self._active_size or self._sealed)

    async def append(self, encoded: Sequence[bytes]) -> None:
        """Returns once the encoded records are on disk (fsync'd), a line each; OSError if they cannot be."""
        waiter = asyncio.get_running_loop().create_future()
        self._pending.append(b"\n".join(encoded) + b"\n")
        self._waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await waiter

    async def _flush(self) -> None:
        while self._pending:
            data, waiters = b"".join(self._pending), self._waiters
            self._pending, self._waiters = [], []
            try:
                async with self._io_lock:
                    await asyncio.to_thread(self._write, data)
            except OSError as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._seq += 1
            path = self.slot.path / f"{self.prefix}-{self._seq:010d}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            self._active_path = path
            _fsync_dir(self.slot.path)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._active_size += len(data)
        if self._active_size >= self._segment_bytes:
            self._close_active()

    def _close_active(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._active_size:
            self._sealed.append(self._active_path)
        else:
            self._active_path.unlink()
        self._active_size = 0

    async def seal(self) -> list[Path]:
        """Close the segment being written; returns every closed segment, oldest first."""
        async with self._io_lock:
            self._close_active()
            return list(self._sealed)

    async def discard(self, path: Path) -> None:
        """Remove a segment whose records are safely stored elsewhere."""
        # Forgotten first: cancelled while the thread unlinks it, the segment must not be replayed
        # from a file that is gone (one left behind instead is replayed idempotently at next start).
        self._sealed.remove(path)
        await asyncio.to_thread(_remove, path)

    async def close(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        async with self._io_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.slot.release()


def _remove(path: Path) -> None:
    path.unlink()
    _fsync_dir(path.parent)


def quarantine(root: Path, lines: Iterable[bytes]) -> int:
    """Keep undecodable lines for a human, in `rejected.jsonl`; returns how many."""
    data = list(lines)
    if data:
        with (root / "rejected.jsonl").open("ab") as file:
            file.writelines(line if line.endswith(b"\n") else line + b"\n" for line in data)
            file.flush()
            os.fsync(file.fileno())
    return len(data)
