"""Records the store kept failing to take while it took others: counted, then set aside for a human.

Each spool slot keeps `attempts.json` (failed writes per record id, so a restart goes on counting) and
`dead-letter.jsonl` (one line per record set aside, with its reason). Nothing is dropped: an operator
lists them with `citadel-proxy dead-letters` and can load a record's JSON once its cause is fixed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

DEAD_LETTER = "dead-letter.jsonl"
_ATTEMPTS = "attempts.json"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    set_aside_at: datetime
    attempts: int
    reason: str
    bytes: int
    record: msgspec.Raw


_decode_letter = msgspec.json.Decoder(DeadLetter).decode
_decode_counts = msgspec.json.Decoder(dict[str, int]).decode


class Attempts:
    """Failed writes per record id in one slot; every change is on disk before the next write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path = directory / _ATTEMPTS
        self._counts: dict[str, int] = {}

    @classmethod
    def load(cls, directory: Path) -> Attempts:
        attempts = cls(directory)
        if attempts._path.exists():
            try:
                attempts._counts = _decode_counts(attempts._path.read_bytes())
            except msgspec.DecodeError:
                attempts._counts = {}  # torn by a crash: counting starts again, nothing is lost
        return attempts

    def __bool__(self) -> bool:
        return bool(self._counts)

    def count(self, record_id: str) -> int:
        return self._counts.get(record_id, 0)

    def charge(self, record_id: str) -> int:
        self._counts[record_id] = self.count(record_id) + 1
        self._save()
        return self._counts[record_id]

    def forget(self, record_ids: Iterable[str]) -> None:
        """Drop the counts of records that left the spool (stored or set aside)."""
        before = len(self._counts)
        for record_id in record_ids:
            self._counts.pop(record_id, None)
        if len(self._counts) != before:
            self._save()

    def _save(self) -> None:
        if not self._counts:
            self._path.unlink(missing_ok=True)
            return
        tmp = self._path.with_suffix(".tmp")
        with tmp.open("wb") as file:
            file.write(msgspec.json.encode(self._counts))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self._path)


def set_aside(directory: Path, record_id: str, encoded: bytes, attempts: int, reason: str) -> Path:
    """Append the record to the slot's dead-letter file, fsync'd; returns the file."""
    letter = DeadLetter(
        id=record_id,
        set_aside_at=datetime.now(UTC),
        attempts=attempts,
        reason=reason,
        bytes=len(encoded),
        record=msgspec.Raw(encoded),
    )
    path = directory / DEAD_LETTER
    with path.open("ab") as file:
        file.write(msgspec.json.encode(letter) + b"\n")
        file.flush()
        os.fsync(file.fileno())
    return path


def dead_letters(root: Path) -> list[tuple[Path, DeadLetter]]:
    """Every record set aside under the spool root, oldest first, each once (a crash may write twice)."""
    found: dict[str, tuple[Path, DeadLetter]] = {}
    for path in sorted(root.glob(f"slot-*/{DEAD_LETTER}")):
        with path.open("rb") as file:
            for line in file:
                # A line torn by a crash mid-write is left in the file, for a human, but not listed.
                with contextlib.suppress(msgspec.DecodeError):
                    letter = _decode_letter(line)
                    found.setdefault(letter.id, (path, letter))
    return sorted(found.values(), key=lambda item: item[1].set_aside_at)
