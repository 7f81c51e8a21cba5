"""A worker's last-known-good copy of the live database keys: what checks keys while PostgreSQL cannot.

The copy holds what the `api_keys` table holds for live keys (digests, never keys), so a revoked key is
not in it. It is kept in memory and written to `<data>/keys-snapshot.json` (mode 0600), so that a gateway
restarted during an outage still knows its keys, if the copy was checked against the same database
recently enough (`auth.snapshot_max_age_s`: an old copy could still hold keys revoked since).
`reachable` says whether the database answers: set once a reload and the pool succeed, cleared by a
failed lookup or a lost LISTEN connection; while it is false every key is checked against the copy
alone, without waiting for the database.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from citadel_proxy.auth.keys import ADMIN, KeyRecord
from citadel_proxy.pipeline.types import Principal
from citadel_proxy.private_files import replace_private

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "keys-snapshot.json"


class SnapshotFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    database: str  # which database the copy came from (host, port, name, schema): never its password
    verified_at: datetime  # when the database last confirmed these were its live keys
    keys: list[KeyRecord]


@dataclass(slots=True)
class KeySnapshot:
    path: Path | None = None
    database: str = ""
    max_age_s: float = 3600.0
    reachable: bool = False
    # A lookup failed while `reachable`: the follower re-reads the copy and tries the pool soon.
    suspected: bool = False
    _records: list[KeyRecord] = field(default_factory=list)
    _by_digest: dict[bytes, Principal] = field(default_factory=dict)
    _verified_at: datetime | None = None
    _saved: SnapshotFile | None = None
    _writing: threading.Lock = field(default_factory=threading.Lock)

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
        self._verified_at = datetime.now(UTC)

    def confirm(self) -> None:
        """The database answers again, through the pool that lookups use."""
        self.reachable = True
        self.suspected = False

    def suspect(self, reason: Exception) -> None:
        """A lookup failed: answer from the copy until a reload and the pool succeed again."""
        if self.reachable:
            log.warning("key database unavailable (%s); checking keys against the last known copy", reason)
        self.reachable = False
        self.suspected = True

    def lost(self) -> None:
        """The LISTEN connection is gone: changes may be missed, and the database probably cannot answer."""
        self.reachable = False

    def load_saved(self) -> bool:
        """Take the copy an earlier run wrote (for a start while PostgreSQL is down); False if none fits."""
        if self.path is None:
            return False
        try:
            saved = msgspec.json.decode(self.path.read_bytes(), type=SnapshotFile)
        except FileNotFoundError:
            return False
        except (OSError, msgspec.DecodeError) as exc:
            log.error("ignoring the saved key copy %s: %s", self.path, exc)
            return False
        age_s = (datetime.now(UTC) - saved.verified_at).total_seconds()
        if saved.database != self.database or age_s > self.max_age_s:
            log.error(
                "ignoring the saved key copy %s: from %s, checked %.0f s ago (limit %.0f s)",
                self.path, saved.database, age_s, self.max_age_s,
            )  # fmt: skip
            return False
        self._records, self._verified_at, self._saved = saved.keys, saved.verified_at, saved
        self._by_digest = {r.digest: r.principal() for r in saved.keys}
        return True

    def save(self, every_s: float = 0.0) -> None:
        """Write the copy to disk when it changed, or `every_s` after the last write so that its age
        stays known (blocking: run it in a thread)."""
        # One write at a time, each of the copy as it is when the write starts: the last one is current.
        with self._writing:
            self._save(every_s)

    def _save(self, every_s: float) -> None:
        if self.path is None or self._verified_at is None:
            return
        last = self._saved
        if (
            last
            and last.keys == self._records
            and (self._verified_at - last.verified_at).total_seconds() < every_s
        ):
            return
        copy = SnapshotFile(database=self.database, verified_at=self._verified_at, keys=self._records)
        try:
            replace_private(self.path, msgspec.json.encode(copy))
        except OSError as exc:
            # The copy in memory still serves this run; only a restart during an outage would miss it.
            log.warning("cannot write the key copy %s: %s", self.path, exc)
            return
        self._saved = copy
