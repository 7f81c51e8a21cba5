"""Keys known without a database: the config's digests plus `<data>/keys.json` (mode 0600).

The keys file holds digests only. The bootstrap admin key lands there when no database is configured,
and `citadel-proxy keys` manages it then. Each lookup re-reads the file when it changed (one `stat`), so
a revocation from the CLI takes effect on the next request in every worker. While there is no file
(keys in PostgreSQL, or none yet) a lookup asks whether it appeared at most once a second: a key it brings
is new, and may wait that long; nothing in it can be a revocation.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from citadel_proxy.auth.keys import KeyRecord, same_digest
from citadel_proxy.errors import ServiceUnavailable
from citadel_proxy.pipeline.types import Principal
from citadel_proxy.private_files import replace_private

KEYS_FILE = "keys.json"
# While the keys file is absent, how long a lookup trusts that it still is.
ABSENT_RECHECK_S = 1.0


class KeysFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keys: list[KeyRecord] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(KeysFile).decode
_encode = msgspec.json.Encoder().encode


def read_keys_file(path: Path) -> list[KeyRecord]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        return _decode(data).keys
    except msgspec.DecodeError as exc:
        raise ServiceUnavailable(f"the keys file {path} is not valid: {exc}") from None


def write_keys_file(path: Path, keys: list[KeyRecord]) -> None:
    """Replace the file atomically; the new file is created 0600, never widened then narrowed."""
    replace_private(path, _encode(KeysFile(keys=keys)))


@dataclass(slots=True)
class StaticKeys:
    """Config keys and file keys, matched by comparing the digest with every entry in constant time."""

    config_keys: tuple[KeyRecord, ...]
    path: Path
    _file_keys: tuple[KeyRecord, ...] = ()
    _stamp: tuple[int, int, int] | None = None
    # The live keys' digests and principals, rebuilt only when the keys file changes.
    _live: tuple[tuple[bytes, Principal], ...] | None = None
    # The file was absent: not asked again before this time (time.monotonic).
    _absent_until: float = 0.0

    def records(self) -> list[KeyRecord]:
        self._refresh()
        return [*self.config_keys, *self._file_keys]

    def lookup(self, digest: bytes) -> Principal | None:
        self._refresh()
        if self._live is None:
            self._live = tuple(
                (r.digest, r.principal())
                for r in (*self.config_keys, *self._file_keys)
                if r.revoked_at is None
            )
        found = None
        # No early exit: the time taken does not depend on which entry (if any) matched.
        for known, principal in self._live:
            if same_digest(known, digest):
                found = principal
        return found

    def written(self) -> None:
        """This process wrote the file: the next lookup reads it, however lately it was found absent."""
        self._absent_until = 0.0

    def _refresh(self) -> None:
        # Every lookup while the file exists: a key revoked in it stops at once, in every worker.
        if self._stamp is None:
            # Absent (keys in PostgreSQL, or none yet): a path lookup per request was the costliest
            # step of authentication, so it is asked again only once a second; and asked without the
            # FileNotFoundError that os.stat raises, which cost twice the system call itself.
            now = time.monotonic()
            if now < self._absent_until:
                return
            if not os.access(self.path, os.F_OK):
                self._absent_until = now + ABSENT_RECHECK_S
                return
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None or self._file_keys:
                self._file_keys, self._stamp, self._live = (), None, None
            return
        # os.replace gives the file a new inode, so a rewrite within one mtime tick is still seen.
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._file_keys = tuple(read_keys_file(self.path))
            self._stamp, self._live = stamp, None
