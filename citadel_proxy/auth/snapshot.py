"""A worker's last-known-good copy of the live database keys: what checks keys while PostgreSQL cannot.

The copy holds what the `api_keys` table holds for live keys (digests, never keys), so a revoked key is
not in it. It is kept in memory and written to `<data>/keys-snapshot.json` (mode 0600), so that a gateway
restarted during an outage still knows its keys. `reachable` says whether the database answers: it is
set by a successful reload and cleared by a failed lookup or a lost LISTEN connection, and while it is
false every key is checked against the copy alone, without waiting for the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from citadel_proxy.auth.filekeys import read_keys_file, write_keys_file
from citadel_proxy.auth.keys import ADMIN, KeyRecord
from citadel_proxy.errors import ServiceUnavailable
from citadel_proxy.pipeline.types import Principal

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "keys-snapshot.json"


@dataclass(slots=True)
class KeySnapshot:
    path: Path | None = None
    reachable: bool = False
    _records: list[KeyRecord] = field(default_factory=list)
    _by_digest: dict[bytes, Principal] = field(default_factory=dict)
    _saved: list[KeyRecord] | None = None
    _suspect: asyncio.Event = field(default_factory=asyncio.Event)

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, digest: bytes) -> Principal | None:
        # A dict probe: its timing depends on the digest's hash, which an attacker cannot steer.
        return self._by_digest.get(digest)

    def has_admin(self) -> bool:
        return any(ADMIN in r.scopes for r in self._records)

    def replace(self, records: list[KeyRecord]) -> None:
        """The database's live keys, just read."""
        live = [r for r in records if r.revoked_at is None]
        self._records = live
        self._by_digest = {r.digest: r.principal() for r in live}

    def confirm(self) -> None:
        """The database answers again, through the pool that lookups use."""
        self.reachable = True
        self._suspect.clear()

    def suspect(self, reason: Exception) -> None:
        """A lookup failed: answer from the copy until a reload succeeds (the follower is woken for one)."""
        if self.reachable:
            log.warning("key database unavailable (%s); checking keys against the last known copy", reason)
        self.reachable = False
        self._suspect.set()

    @property
    def suspected(self) -> bool:
        return self._suspect.is_set()

    def lost(self) -> None:
        """The LISTEN connection is gone: changes may be missed, and the database probably cannot answer."""
        self.reachable = False

    def load_saved(self) -> bool:
        """Take the copy written by an earlier run (for a start while PostgreSQL is down); False if none."""
        if self.path is None:
            return False
        try:
            records = read_keys_file(self.path)
        except ServiceUnavailable as exc:
            log.error("ignoring the saved key copy: %s", exc)
            return False
        if not records and not self.path.exists():
            return False
        self._records = records
        self._by_digest = {r.digest: r.principal() for r in records}
        self._saved = records
        return True

    def save(self) -> None:
        """Write the copy to disk if it changed since last written (blocking: run it in a thread)."""
        if self.path is None or self._records == self._saved:
            return
        try:
            write_keys_file(self.path, self._records)
        except OSError as exc:
            # The copy in memory still serves this run; only a restart during an outage would miss it.
            log.warning("cannot write the key copy %s: %s", self.path, exc)
            return
        self._saved = self._records
