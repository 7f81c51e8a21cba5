"""Opening the audit trail at start: pool, migrations, spool and writer, closed by the app's exit stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit.errors import StoreUnavailable
from citadel_proxy.audit.migrate import migrate
from citadel_proxy.audit.queries import AuditQueries
from citadel_proxy.audit.sink import AuditSink
from citadel_proxy.audit.spool import Spool, claim_free_slot
from citadel_proxy.audit.store import PostgresStore
from citadel_proxy.config.schema import AuditOptions, Config, Database

log = logging.getLogger(__name__)


async def open_audit(
    config: Config, stack: contextlib.AsyncExitStack, options: AuditOptions | None = None
) -> AuditSink:
    """Start the audit trail; `stack` closes it (queue drained) and then its pool."""
    options = options or config.audit
    root = Path(options.spool_dir or Path(config.paths.data) / "audit")
    slot = await asyncio.to_thread(claim_free_slot, root)
    db = config.database
    spool = Spool(slot, prefix="audit" if db is None else "spool", segment_bytes=options.segment_bytes)
    if db is None:
        sink = AuditSink(
            spool, None, batch_size=options.batch_size, queue_size=options.queue_size, retry_s=options.retry_s
        )
    else:
        pool = await _open_pool(db, options, stack)
        prepare = await _migrate_or_defer(db) if db.migrate_on_start else None
        sink = AuditSink(
            spool,
            PostgresStore(pool, options.write_timeout_s),
            batch_size=options.batch_size,
            queue_size=options.queue_size,
            retry_s=options.retry_s,
            prepare=prepare,
            linger_s=options.linger_s,
            spool_first=options.durability == "spool",
        )
        sink.queries = AuditQueries(pool, options.write_timeout_s)
    sink.start()
    stack.push_async_callback(sink.close)
    return sink


async def _open_pool(
    db: Database, options: AuditOptions, stack: contextlib.AsyncExitStack
) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        db.conninfo(),
        min_size=1,
        max_size=db.pool_size + db.max_overflow,
        timeout=db.pool_timeout,
        max_lifetime=db.pool_recycle,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(options.write_timeout_s))},
        # Checked when taken: after a database restart a broken connection is replaced, not used to fail
        # a batch (which would send it, and everything queued behind it, to the spool).
        check=AsyncConnectionPool.check_connection,
        name="audit",
        open=False,
    )
    # wait=False: the gateway starts (and spools) even while PostgreSQL is down.
    await pool.open(wait=False)
    stack.push_async_callback(pool.close)
    return pool


async def _migrate_or_defer(db: Database) -> _Deferred | None:
    deferred = _Deferred(db)
    try:
        await deferred()
    except StoreUnavailable as exc:
        log.warning("audit migrations deferred until PostgreSQL is reachable: %s", exc.__cause__)
        return deferred
    return None


class _Deferred:
    """Migrations still to run, retried by the sink before it replays the spool."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __call__(self) -> None:
        try:
            await asyncio.to_thread(migrate, self._db.conninfo(), self._db.db_schema)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"migrations cannot run yet: {exc}") from exc
