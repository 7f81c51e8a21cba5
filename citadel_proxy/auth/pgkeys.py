"""Keys in PostgreSQL: the `api_keys` table, its migration, and the NOTIFY that reaches every worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from citadel_proxy.auth.cache import KeyCache
from citadel_proxy.auth.keys import SCOPES, KeyRecord, same_digest
from citadel_proxy.auth.snapshot import KeySnapshot
from citadel_proxy.errors import InvalidRequest, ServiceUnavailable
from citadel_proxy.pipeline.types import Principal

log = logging.getLogger(__name__)

CHANNEL = "citadel_api_keys"
# pg_advisory_xact_lock key: workers starting together run the migration one at a time.
_MIGRATION_LOCK = 0x_C17A_0001
# last_used is written at most this often per key, so a busy key does not write on every lookup.
_TOUCH_INTERVAL = "60 seconds"

_LOOKUP = f"""
WITH hit AS (
    SELECT id, name, key_hash, scopes, requests_per_minute, tokens_per_minute, last_used
    FROM api_keys WHERE key_hash = %(digest)s AND revoked_at IS NULL
), touch AS (
    UPDATE api_keys SET last_used = now() FROM hit
    WHERE api_keys.id = hit.id
      AND (hit.last_used IS NULL OR hit.last_used < now() - interval '{_TOUCH_INTERVAL}')
)
SELECT name, key_hash, scopes, requests_per_minute, tokens_per_minute FROM hit
"""
_COLUMNS = (
    "name, key_hash, prefix, scopes, requests_per_minute, tokens_per_minute,"
    " created_at, revoked_at, last_used"
)


def _schema_sql() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text()


@asynccontextmanager
async def translated(action: str) -> AsyncIterator[None]:
    """Database trouble reaches clients as 503, never as a traceback."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
        raise ServiceUnavailable(f"the key database is unavailable while {action}") from exc


async def live_keys(conn: psycopg.AsyncConnection[Any]) -> list[KeyRecord]:
    cur = await conn.cursor(row_factory=dict_row).execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY id"
    )
    return [_record(row) for row in await cur.fetchall()]


def _record(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        name=row["name"],
        sha256=bytes(row["key_hash"]).hex(),
        prefix=row["prefix"],
        scopes=[s for s in row["scopes"] if s in SCOPES],
        requests_per_minute=row["requests_per_minute"],
        tokens_per_minute=row["tokens_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used=row["last_used"],
        source="database",
    )


@dataclass(frozen=True, slots=True)
class PgKeys:
    pool: AsyncConnectionPool[Any]

    async def migrate(self) -> None:
        sql = _schema_sql()
        async with translated("migrating"), self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(sql)

    async def lookup(self, digest: bytes, timeout_s: float) -> Principal | None:
        """The key's principal; ServiceUnavailable after `timeout_s` at most, never the pool's timeout."""
        async with (
            translated("checking a key"),
            asyncio.timeout(timeout_s),
            self.pool.connection(timeout=timeout_s) as conn,
        ):
            cur = await conn.cursor(row_factory=dict_row).execute(_LOOKUP, {"digest": digest})
            row = await cur.fetchone()
        if row is None or not same_digest(bytes(row["key_hash"]), digest):
            return None
        return Principal(
            name=row["name"],
            scopes=frozenset(row["scopes"]),
            requests_per_minute=row["requests_per_minute"],
            tokens_per_minute=row["tokens_per_minute"],
        )

    async def create(self, record: KeyRecord) -> KeyRecord:
        sql = (
            "INSERT INTO api_keys (name, key_hash, prefix, scopes, requests_per_minute, tokens_per_minute)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}"
        )
        values = (record.name, record.digest, record.prefix, list(record.scopes))
        limits = (record.requests_per_minute, record.tokens_per_minute)
        try:
            async with translated("creating a key"), self.pool.connection() as conn, conn.transaction():
                cur = await conn.cursor(row_factory=dict_row).execute(sql, (*values, *limits))
                row = await cur.fetchone()
                await conn.execute("SELECT pg_notify(%s, 'created')", (CHANNEL,))
        except psycopg.errors.UniqueViolation:
            raise InvalidRequest(f"a live key named {record.name!r} already exists", param="name") from None
        assert row is not None  # INSERT ... RETURNING returns the row
        return _record(row)

    async def list(self) -> list[KeyRecord]:
        async with translated("listing keys"), self.pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id"
            )
            return [_record(row) for row in await cur.fetchall()]

    async def revoke(self, name: str) -> bool:
        sql = "UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL"
        async with translated("revoking a key"), self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(sql, (name,))
            # NOTIFY is delivered at commit, so no worker hears of the revocation before it is visible.
            await conn.execute("SELECT pg_notify(%s, 'revoked')", (CHANNEL,))
        revoked: bool = cur.rowcount > 0
        return revoked

    async def load(self, snapshot: KeySnapshot) -> None:
        async with translated("reading the keys"), self.pool.connection() as conn:
            snapshot.replace(await live_keys(conn))
        snapshot.confirm()
        await asyncio.to_thread(snapshot.save)

    async def ping(self, timeout_s: float) -> None:
        """Whether a lookup would find a working connection now (the pool checks it when taken)."""
        async with (
            translated("connecting"),
            asyncio.timeout(timeout_s),
            self.pool.connection(timeout=timeout_s),
        ):
            pass

    async def has_admin(self) -> bool:
        sql = "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL AND 'admin' = ANY(scopes))"
        async with translated("looking for an admin key"), self.pool.connection() as conn:
            cur = await conn.execute(sql)
            row = await cur.fetchone()
        return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Follower:
    """Keeps a worker's key copy current over one LISTEN connection. Runs until cancelled."""

    conninfo: str
    db: PgKeys
    snapshot: KeySnapshot
    cache: KeyCache
    refresh_s: float
    timeout_s: float
    retry_s: float = 1.0
    # How often a wait for NOTIFY looks whether a failed lookup asks for a reload now.
    poll_s: float = 0.5

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except (psycopg.Error, TimeoutError, OSError) as exc:
                log.warning("key change listener disconnected (%s); checking keys against the copy", exc)
            finally:
                self.snapshot.lost()
                self.cache.listening = False
                self.cache.clear()
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        # connect_timeout in whole seconds (libpq's unit); asyncio.timeout holds the finer bound.
        async with asyncio.timeout(self.timeout_s + 1):
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(2, int(self.timeout_s) + 1)
            )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            while True:
                # Read after LISTEN: a change committed from here on is either in this read or notified.
                async with asyncio.timeout(self.timeout_s + 1):
                    self.snapshot.replace(await live_keys(conn))
                self.cache.clear()
                self.cache.listening = True
                await asyncio.to_thread(self.snapshot.save, self.refresh_s)
                if await self._pool_answers():
                    await self._next_reason(conn, self.refresh_s, wake_on_suspect=True)
                else:
                    await self._next_reason(conn, self.retry_s, wake_on_suspect=False)

    async def _pool_answers(self) -> bool:
        # After an outage the pool reconnects on its own schedule (with back-off): until it has a
        # connection, lookups would each wait for one, so the copy answers alone until then.
        try:
            await self.db.ping(self.timeout_s)
        except ServiceUnavailable:
            return False
        self.snapshot.confirm()
        return True

    async def _next_reason(
        self, conn: psycopg.AsyncConnection[Any], wait_s: float, *, wake_on_suspect: bool
    ) -> None:
        """Return on a key change, after `wait_s`, or (`wake_on_suspect`) soon after a lookup failed."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while not (wake_on_suspect and self.snapshot.suspected):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            # aclosing: the generator holds the connection's lock until closed, and the reload needs it.
            async with aclosing(conn.notifies(timeout=min(left, self.poll_s), stop_after=1)) as changes:
                async for _ in changes:
                    self.cache.clear()  # at once: the reload that follows takes a round trip
                    return
