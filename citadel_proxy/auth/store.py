"""One place to ask "whose key is this?": config and file keys first, then PostgreSQL behind a cache."""

from __future__ import annotations

import asyncio
import contextlib
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
from citadel_proxy.auth.pgkeys import PgKeys, listen, translated
from citadel_proxy.config.schema import Database
from citadel_proxy.errors import InvalidRequest
from citadel_proxy.pipeline.types import Principal


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    record: KeyRecord


@dataclass(slots=True)
class KeyStore:
    static: StaticKeys
    db: PgKeys | None
    cache: KeyCache

    async def authenticate(self, key: str) -> Principal | None:
        if not looks_like_key(key):
            return None
        digest = hash_key(key)
        if (principal := self.static.lookup(digest)) is not None or self.db is None:
            return principal
        if (entry := self.cache.get(digest)) is not None:
            return entry[1]
        generation = self.cache.generation
        principal = await self.db.lookup(digest)
        self.cache.put(digest, principal, generation)
        return principal

    async def has_admin(self) -> bool:
        if any(ADMIN in r.scopes and r.revoked_at is None for r in self.static.records()):
            return True
        return self.db is not None and await self.db.has_admin()

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
        return NewKey(key, record)

    async def list(self) -> list[KeyRecord]:
        stored = await self.db.list() if self.db is not None else []
        return [*self.static.records(), *stored]

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
    static = StaticKeys(
        config_keys=tuple(k.record() for k in settings.keys),
        path=Path(config.paths.data) / KEYS_FILE,
    )
    cache = KeyCache(ttl_s=settings.cache_ttl_s)
    if config.database is None:
        return KeyStore(static, None, cache)
    db = PgKeys(await _open_pool(config.database, stack))
    if config.database.migrate_on_start:
        await db.migrate()
    if listen_changes:
        task = asyncio.create_task(listen(config.database.conninfo(), cache), name="api-key-listener")
        stack.push_async_callback(_cancel, task)
    return KeyStore(static, db, cache)


async def _open_pool(database: Database, stack: contextlib.AsyncExitStack) -> AsyncConnectionPool[Any]:
    # A cache miss is one indexed query: a few connections serve a worker's key lookups.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database.conninfo(),
        min_size=1,
        max_size=min(database.pool_size, 4),
        timeout=database.pool_timeout,
        max_lifetime=database.pool_recycle,
        open=False,
        name="citadel-keys",
    )
    # wait: an unreachable database stops the start here, with a clear error, not at the first request.
    stack.push_async_callback(pool.close)
    async with translated("connecting"):
        await pool.open(wait=True, timeout=database.pool_timeout)
    return pool


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
