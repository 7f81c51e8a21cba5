"""Opening the audit trail at start: store (PostgreSQL, or SQLite without a database), migrations, spool
and writer, closed by the app's exit stack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit.bounds import Limits
from citadel_proxy.audit.conversations import FileOwners, Owners, PostgresOwners
from citadel_proxy.audit.errors import StoreUnavailable
from citadel_proxy.audit.legacy_log import import_audit_log
from citadel_proxy.audit.migrate import migrate
from citadel_proxy.audit.ports import AuditReader, AuditStore
from citadel_proxy.audit.queries import AuditQueries
from citadel_proxy.audit.sink import AuditSink, Prepare
from citadel_proxy.audit.spool import Spool, claim_free_slot
from citadel_proxy.audit.sqlite_file import SqliteFile, sqlite_path
from citadel_proxy.audit.sqlite_queries import SqliteQueries
from citadel_proxy.audit.sqlite_store import SqliteStore
from citadel_proxy.audit.store import PostgresStore, with_statement_timeout
from citadel_proxy.config.schema import AuditOptions, Config, Database
from citadel_proxy.pg_pool import check_taken

log = logging.getLogger(__name__)


def spool_root(config: Config, options: AuditOptions | None = None) -> Path:
    """The folder of the spool's slots (and, beside them, rejected and dead-lettered records)."""
    return Path((options or config.audit).spool_dir or Path(config.paths.data) / "audit")


async def open_audit(
    config: Config, stack: contextlib.AsyncExitStack, options: AuditOptions | None = None
) -> AuditSink:
    """Start the audit trail; `stack` closes it (queue drained) and then its store."""
    options = options or config.audit
    root = spool_root(config, options)
    slot = await asyncio.to_thread(claim_free_slot, root)
    spool = Spool(slot, prefix="spool", segment_bytes=options.segment_bytes)
    db = config.database
    store: AuditStore
    queries: AuditReader
    if db is None:
        store, queries = await _open_sqlite(sqlite_path(config, options), options, stack)
        prepare = await _ready_or_deferred(
            functools.partial(_prepare_sqlite, store, root, options.batch_size)
        )
        owners: Owners = FileOwners(root)
    else:
        pool = await open_pool(db, options, stack)
        store = PostgresStore(pool, options.write_timeout_s)
        queries = AuditQueries(pool, options.write_timeout_s)
        prepare = await _ready_or_deferred(_Deferred(db)) if db.migrate_on_start else None
        owners = PostgresOwners(pool, options.conversation_claim_timeout_s)
    sink = AuditSink(
        spool,
        store,
        batch_size=options.batch_size,
        queue_size=options.queue_size,
        retry_s=options.retry_s,
        prepare=prepare,
        linger_s=options.linger_s,
        spool_first=options.durability == "spool",
        limits=Limits.of(options),
    )
    sink.queries = queries
    sink.owners = owners
    sink.start()
    stack.push_async_callback(sink.close)
    return sink


async def _open_sqlite(
    path: Path, options: AuditOptions, stack: contextlib.AsyncExitStack
) -> tuple[SqliteStore, SqliteQueries]:
    # Two connections, each on its own thread: reads go on while a batch is written (WAL).
    writer = SqliteFile(path, timeout_s=options.write_timeout_s, name="audit-sqlite-writer")
    stack.push_async_callback(writer.close)
    reader = SqliteFile(path, timeout_s=options.write_timeout_s, name="audit-sqlite-reader")
    stack.push_async_callback(reader.close)
    return SqliteStore(writer, options.write_timeout_s), SqliteQueries(reader, options.write_timeout_s)


async def open_pool(
    db: Database, options: AuditOptions, stack: contextlib.AsyncExitStack
) -> AsyncConnectionPool:
    """The audit trail's pool (the store, the management reads, the conversation claims); `stack` closes
    it. Its sessions stop any statement at `write_timeout_s`, as every user of the pool gives up then."""
    pool = AsyncConnectionPool(
        with_statement_timeout(db.conninfo(), options.write_timeout_s),
        min_size=1,
        max_size=db.pool_size + db.max_overflow,
        timeout=db.pool_timeout,
        max_lifetime=db.pool_recycle,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(options.write_timeout_s))},
        # Checked when taken: a broken connection is replaced, not used to fail a batch (which would send
        # it, and everything queued behind it, to the spool).
        check=check_taken,
        name="audit",
        open=False,
    )
    # wait=False: the gateway starts (and spools) even while PostgreSQL is down.
    await pool.open(wait=False)
    stack.push_async_callback(pool.close)
    return pool


async def _prepare_sqlite(store: SqliteStore, root: Path, batch_size: int) -> None:
    await store.migrate()
    await import_audit_log(store, root, batch_size)


async def _ready_or_deferred(prepare: Prepare) -> Prepare | None:
    """Run `prepare` (the store's migrations) now; if the store cannot be reached, hand it to the sink,
    which retries it before it replays the spool."""
    try:
        await prepare()
    except StoreUnavailable as exc:
        log.warning("audit migrations deferred until the store is reachable: %s", exc.__cause__)
        return prepare
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
