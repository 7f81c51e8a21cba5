"""One place to ask "whose key is this?": config and file keys first, then PostgreSQL behind a cache.

While PostgreSQL cannot answer, database keys are checked against each worker's copy of them
(`snapshot.py`): known keys keep working, others are refused at once, and no request waits for the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.auth.cache import KeyCache
from citadel_proxy.auth.filekeys import KEYS_FILE, StaticKeys, read_keys_file, write_keys_file
from citadel_proxy.auth.keys import (
    ADMIN,
    KeyRecord,
    Scope,
    display_prefix,
    generate_key,
    hash_key,
    looks_like_key,
)
from citadel_proxy.auth.pgkeys import Follower, PgKeys
from citadel_proxy.auth.snapshot import SNAPSHOT_FILE, KeySnapshot
from citadel_proxy.auth.usage import KeyUsage, last_used
from citadel_proxy.config.schema import Database
from citadel_proxy.errors import InvalidRequest, ServiceUnavailable
from citadel_proxy.pg_pool import check_taken
from citadel_proxy.pipeline.types import Principal

log = logging.getLogger(__name__)

_RECONNECT_S = 3.0
# How often the last use of config and file keys is written out (and once more at shutdown).
_USAGE_FLUSH_S = 60.0


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    record: KeyRecord


@dataclass(slots=True)
class KeyStore:
    static: StaticKeys
    db: PgKeys | None
    cache: KeyCache
    snapshot: KeySnapshot = dataclasses.field(default_factory=KeySnapshot)
    lookup_timeout_s: float = 0.5
    # When config and file keys were last used (database keys keep theirs in api_keys.last_used).
    usage: KeyUsage | None = None

    async def authenticate(self, key: str) -> Principal | None:
        if not looks_like_key(key):
            return None
        digest = hash_key(key)
        if (principal := self.static.lookup(digest)) is not None or self.db is None:
            if principal is not None and self.usage is not None:
                self.usage.seen(digest)
            return principal
        if (entry := self.cache.get(digest)) is not None:
            return entry[1]
        if not self.snapshot.reachable:
            return self.snapshot.lookup(digest)
        generation = self.cache.generation
        try:
            principal = await self.db.lookup(digest, self.lookup_timeout_s)
        except ServiceUnavailable as exc:
            self.snapshot.suspect(exc)
            return self.snapshot.lookup(digest)
        self.cache.put(digest, principal, generation)
        return principal

    async def has_admin(self) -> bool:
        if any(ADMIN in r.scopes and r.revoked_at is None for r in self.static.records()):
            return True
        if self.db is None:
            return False
        if self.snapshot.reachable:
            try:
                return await self.db.has_admin()
            except ServiceUnavailable as exc:
                self.snapshot.suspect(exc)
        return self.snapshot.has_admin()

    async def create(
        self,
        name: str,
        scopes: list[Scope],
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        key: str | None = None,
    ) -> NewKey:
        """Register a key (a new random one unless `key` is given); the plain key is only in the result."""
        key = key or generate_key()
        record = _checked(
            name=name,
            sha256=hash_key(key).hex(),
            prefix=display_prefix(key),
            scopes=scopes,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            created_at=datetime.now(UTC),
        )
        if self.db is not None:
            record = await self.db.create(record)
            self.cache.clear()
        else:
            records = read_keys_file(self.static.path)
            if any(r.name == name and r.revoked_at is None for r in self.static.records()):
                raise InvalidRequest(f"a live key named {name!r} already exists", param="name")
            write_keys_file(self.static.path, [*records, record])
            self.static.written()
        return NewKey(key, record)

    async def list(self) -> list[KeyRecord]:
        stored = await self.db.list() if self.db is not None else []
        static = self.static.records()
        if self.usage is not None:
            used = await asyncio.to_thread(last_used, self.usage.path.parent)
            static = [
                msgspec.structs.replace(r, last_used=used[r.sha256]) if r.sha256 in used else r
                for r in static
            ]
        return [*static, *stored]

    async def revoke(self, name: str) -> bool:
        if any(r.name == name for r in self.static.config_keys):
            raise InvalidRequest(f"key {name!r} is defined in the config file; remove it there", param="name")
        if self.db is not None:
            revoked = await self.db.revoke(name)
            self.cache.clear()
            return revoked
        records = read_keys_file(self.static.path)
        now = datetime.now(UTC)
        changed = [
            msgspec.structs.replace(r, revoked_at=now) if r.name == name and r.revoked_at is None else r
            for r in records
        ]
        if changed == records:
            return False
        write_keys_file(self.static.path, changed)
        self.static.written()
        return True


def _checked(**fields: Any) -> KeyRecord:
    """Build a record with the same validation as the keys file and config get (names, scopes, limits)."""
    try:
        record = msgspec.convert(fields, KeyRecord, from_attributes=False, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid key: {exc}") from None
    if not record.scopes:
        raise InvalidRequest("a key needs at least one scope", param="scopes")
    return record


async def open_key_store(
    config: Any, stack: contextlib.AsyncExitStack, *, listen_changes: bool = True
) -> KeyStore:
    """The key store for the app's lifespan (or the CLI, which passes `listen_changes=False`)."""
    settings = config.auth
    data = Path(config.paths.data)
    static = StaticKeys(config_keys=tuple(k.record() for k in settings.keys), path=data / KEYS_FILE)
    cache = KeyCache(ttl_s=settings.cache_ttl_s)
    usage = KeyUsage(data)
    if listen_changes:
        task = asyncio.create_task(usage.run(_USAGE_FLUSH_S), name="key-usage")
        stack.push_async_callback(_cancel, task)
    if config.database is None:
        return KeyStore(static, None, cache, usage=usage)
    # The CLI changes keys and must see the database itself: it neither reads nor writes the copy.
    snapshot = KeySnapshot(
        path=data / SNAPSHOT_FILE if listen_changes else None,
        database=_identity(config.database),
        max_age_s=settings.snapshot_max_age_s,
    )
    db = PgKeys(await _open_pool(config.database, stack))
    await _first_contact(config.database, db, snapshot, settings.lookup_timeout_s)
    if listen_changes:
        follower = Follower(
            config.database.conninfo(),
            db,
            snapshot,
            cache,
            refresh_s=settings.snapshot_refresh_s,
            timeout_s=settings.lookup_timeout_s,
        )
        task = asyncio.create_task(follower.run(), name="api-key-listener")
        stack.push_async_callback(_cancel, task)
    return KeyStore(static, db, cache, snapshot, settings.lookup_timeout_s, usage)


def _identity(database: Database) -> str:
    return f"{database.host}:{database.port}/{database.database} schema {database.db_schema}"


async def _first_contact(database: Database, db: PgKeys, snapshot: KeySnapshot, timeout_s: float) -> None:
    """Migrate and read the keys; with PostgreSQL down, start from the saved copy if there is one."""
    saved = await asyncio.to_thread(snapshot.load_saved)
    try:
        # Not pool.wait(), which closes the pool when it times out. With a saved copy there is no
        # reason to hold the start for the pool's whole timeout.
        await db.ping(timeout_s if saved else database.pool_timeout)
        if database.migrate_on_start:
            await db.migrate()
        await db.load(snapshot)
    except ServiceUnavailable as exc:
        if not saved:
            raise
        log.warning(
            "PostgreSQL is unreachable at start (%s); checking keys against the %d saved in %s",
            exc.__cause__ or exc,
            len(snapshot),
            snapshot.path,
        )


async def _open_pool(database: Database, stack: contextlib.AsyncExitStack) -> AsyncConnectionPool[Any]:
    # A cache miss is one indexed query: a few connections serve a worker's key lookups.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database.conninfo(),
        min_size=1,
        max_size=min(database.pool_size, 4),
        timeout=database.pool_timeout,
        max_lifetime=database.pool_recycle,
        # Checked when taken: a connection broken by a database restart is replaced, not handed out.
        check=check_taken,
        # After an outage the pool's own back-off (1, 2, 4 ... s) could keep it from PostgreSQL long
        # after it is back; giving up soon lets the follower's next ping start a fresh attempt.
        reconnect_timeout=_RECONNECT_S,
        open=False,
        name="citadel-keys",
    )
    stack.push_async_callback(pool.close)
    # wait=False: _first_contact waits, and may give up sooner when a saved key copy lets us start.
    await pool.open(wait=False)
    return pool


async def _cancel(task: asyncio.Task[None]) -> None:
    # Again until it ends: on Python 3.11, asyncio.wait_for (used by psycopg_pool while the follower
    # waits for a connection) can swallow a cancellation that arrives as its wait completes.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
