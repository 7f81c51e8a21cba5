"""When config and file keys were last used: noted in memory on every accepted request, written out once
a minute (keys kept in PostgreSQL have their own `api_keys.last_used`).

Noting costs a dict store on the request path; the writes happen off it. The file,
`<data>/key-usage.json`, holds digests and times only, merged under an flock so that workers and CLI runs
never lose each other's entries.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from citadel_proxy.private_files import replace_private

USAGE_FILE = "key-usage.json"

_log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(dict[str, float]).decode
_encode = msgspec.json.Encoder().encode


class KeyUsage:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / USAGE_FILE
        self._pending: dict[bytes, float] = {}

    def seen(self, digest: bytes) -> None:
        self._pending[digest] = time.time()

    async def flush(self) -> None:
        """Write out what was noted since the last flush, off the event loop."""
        if self._pending:
            pending, self._pending = self._pending, {}
            await asyncio.to_thread(self._write, pending)

    def flush_now(self) -> None:
        """The same, in this thread: at shutdown, where a short file write may block."""
        if self._pending:
            pending, self._pending = self._pending, {}
            self._write(pending)

    def _write(self, pending: dict[bytes, float]) -> None:
        try:
            merge_usage_file(self.path, pending)
        except OSError as exc:  # kept for the next flush: a lost time is not worth a failure
            _log.warning("key last-use times not written now: %s", exc)
            for digest, when in pending.items():
                self._pending[digest] = max(when, self._pending.get(digest, 0.0))

    async def run(self, every_s: float) -> None:
        """Flush every `every_s` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(every_s)
                await self.flush()
        finally:
            self.flush_now()


def merge_usage_file(path: Path, times: dict[bytes, float]) -> None:
    """Fold `times` into the file, keeping the later time per digest (atomic replace, 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = _read(path)
        for digest, when in times.items():
            key = digest.hex()
            merged[key] = max(when, merged.get(key, 0.0))
        replace_private(path, _encode(merged))
    finally:
        os.close(lock)


def last_used(data_dir: Path) -> dict[str, datetime]:
    """The recorded time per key digest (hex), for listings."""
    return {k: datetime.fromtimestamp(v, UTC) for k, v in _read(data_dir / USAGE_FILE).items()}


def _read(path: Path) -> dict[str, float]:
    try:
        return _decode(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (msgspec.DecodeError, msgspec.ValidationError):
        _log.warning("%s is not valid; key last-use times start again", path)
        return {}
