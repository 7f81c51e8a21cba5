"""PostgreSQL out of reach: database keys checked against each worker's copy, at once, never after 30 s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from citadel_proxy.auth.config import AuthConfig
from citadel_proxy.auth.keys import KeyRecord, generate_key, hash_key
from citadel_proxy.auth.pgkeys import PgKeys
from citadel_proxy.auth.snapshot import SNAPSHOT_FILE, KeySnapshot, SnapshotFile
from citadel_proxy.auth.store import KeyStore, open_key_store
from citadel_proxy.config.schema import Database
from citadel_proxy.errors import ServiceUnavailable
from tests.audit.conftest import TcpProxy
from tests.auth.conftest import MakeConfig, eventually, wait_listening

# The pool's own default: what a request waited for before the copy existed.
POOL_TIMEOUT_S = 30.0
# "Never a 30 s wait": far above the milliseconds measured, far below the pool's timeout.
PROMPT_S = 3.0


def through(database_proxy: TcpProxy, database: Database) -> Database:
    return msgspec.structs.replace(database, port=database_proxy.port, pool_timeout=POOL_TIMEOUT_S)


async def gateway_store(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack, **auth: float
) -> KeyStore:
    store = await open_key_store(make_config(database, AuthConfig(**auth)), stack)
    await wait_listening(store)
    return store


async def promptly(store: KeyStore, key: str) -> bool:
    """Whether the key is accepted; fails if the answer took anywhere near the pool's timeout."""
    started = time.monotonic()
    principal = await store.authenticate(key)
    assert time.monotonic() - started < PROMPT_S
    return principal is not None


async def test_known_keys_work_and_others_are_refused_at_once_while_postgresql_is_cut(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack, database_proxy: TcpProxy
) -> None:
    store = await gateway_store(make_config, through(database_proxy, database), stack)
    kept = await store.create("kept", ["inference"])
    gone = await store.create("gone", ["inference"])
    assert await store.revoke("gone")
    await eventually(lambda: _known(store, kept.key), 5)
    # The copy follows the database through NOTIFY, milliseconds after the commit: cut once it has the
    # revocation (a cut inside that window would find the copy one change behind).
    await eventually(lambda: _not_in_copy(store, gone.key), 5)
    await database_proxy.cut()
    for _ in range(3):  # the first finds the database gone, the next ones do not ask it
        assert await promptly(store, kept.key)
        assert not await promptly(store, gone.key)
        assert not await promptly(store, "cit_" + "x" * 43)
    assert not store.snapshot.reachable
    assert await store.has_admin() is False  # answered from the copy, not after the pool's timeout
    await database_proxy.restore()
    await eventually(lambda: _reachable(store), 5)
    assert await store.authenticate(kept.key) is not None


async def test_a_key_created_or_revoked_elsewhere_reaches_the_copy_through_notify(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack, database_proxy: TcpProxy
) -> None:
    store = await gateway_store(
        make_config, through(database_proxy, database), stack, snapshot_refresh_s=3600
    )
    cli = await open_key_store(make_config(database), stack, listen_changes=False)
    old = await cli.create("old", ["inference"])
    await eventually(lambda: _in_copy(store, old.key), 5)
    assert await cli.revoke("old")
    new = await cli.create("new", ["inference"])
    # Committed after the revocation: a copy read late enough to hold it no longer holds "old".
    await eventually(lambda: _in_copy(store, new.key), 5)
    assert store.snapshot.lookup(hash_key(old.key)) is None
    await database_proxy.cut()
    assert await store.authenticate(new.key) is not None
    assert await store.authenticate(old.key) is None


async def test_a_change_without_notify_reaches_the_copy_on_the_timer(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    store = await gateway_store(make_config, database, stack, snapshot_refresh_s=0.2)
    cli = await open_key_store(make_config(database), stack, listen_changes=False)
    new = await cli.create("quiet", ["inference"])
    assert cli.db is not None
    async with cli.db.pool.connection() as conn:
        # As if the notification were lost: the copy is read again anyway, within snapshot_refresh_s.
        await conn.execute("UPDATE api_keys SET revoked_at = now()")
    await eventually(lambda: _in_copy(store, new.key), 5)
    await eventually(lambda: _not_in_copy(store, new.key), 5)


async def test_the_copy_on_disk_holds_digests_only_and_lets_a_start_during_an_outage_serve_keys(
    make_config: MakeConfig, database: Database, database_proxy: TcpProxy, tmp_path: Path
) -> None:
    config = make_config(through(database_proxy, database))
    async with contextlib.AsyncExitStack() as stack:
        store = await gateway_store(make_config, config.database, stack)
        new = await store.create("svc", ["inference", "admin"])
        saved = tmp_path / "data" / SNAPSHOT_FILE
        await eventually(lambda: _on_disk(saved, new.key), 5)
    text = saved.read_text()
    assert hash_key(new.key).hex() in text and new.key not in text and new.key[12:] not in text
    assert os.stat(saved).st_mode & 0o777 == 0o600
    await database_proxy.cut()
    async with contextlib.AsyncExitStack() as stack:
        started = time.monotonic()
        store = await open_key_store(config, stack)
        assert time.monotonic() - started < PROMPT_S
        assert await promptly(store, new.key)
        assert await store.has_admin()  # the first admin key is not made again during the outage
        await database_proxy.restore()
        await eventually(lambda: _reachable(store), 10)
        assert await store.authenticate(new.key) is not None


async def test_without_a_saved_copy_a_start_during_an_outage_still_fails_clearly(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack, database_proxy: TcpProxy
) -> None:
    await database_proxy.cut()
    unreachable = msgspec.structs.replace(database, port=database_proxy.port, pool_timeout=0.5)
    with pytest.raises(ServiceUnavailable, match="unavailable while connecting"):
        await open_key_store(make_config(unreachable), stack)


def test_a_saved_copy_is_used_only_from_the_same_database_and_recent_enough(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_FILE
    key = generate_key()
    record = KeyRecord(name="svc", sha256=hash_key(key).hex(), scopes=["inference"], source="database")

    def saved(database: str, age_s: float) -> None:
        verified_at = datetime.now(UTC) - timedelta(seconds=age_s)
        copy = SnapshotFile(database=database, verified_at=verified_at, keys=[record])
        path.write_bytes(msgspec.json.encode(copy))

    saved("db-a", 10)
    assert not KeySnapshot(path, database="db-b").load_saved()  # pointed at another database since
    copy = KeySnapshot(path, database="db-a", max_age_s=60)
    assert copy.load_saved() and copy.lookup(hash_key(key)) is not None
    saved("db-a", 120)  # the gateway was stopped for a while: keys may have been revoked since
    assert not KeySnapshot(path, database="db-a", max_age_s=60).load_saved()
    path.write_text("{not json")
    assert not KeySnapshot(path, database="db-a").load_saved()


async def test_a_postgresql_restart_costs_no_lookup(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack, database_proxy: TcpProxy
) -> None:
    store = await open_key_store(make_config(through(database_proxy, database)), stack, listen_changes=False)
    new = await store.create("svc", ["inference"])
    assert isinstance(store.db, PgKeys)
    assert await store.db.lookup(hash_key(new.key), PROMPT_S) is not None  # a connection is in the pool
    await database_proxy.cut()
    await database_proxy.restore()
    # The pooled connection died with the cut: checked when taken, replaced, and this lookup succeeds.
    assert await store.db.lookup(hash_key(new.key), PROMPT_S) is not None


async def _known(store: KeyStore, key: str) -> bool:
    return await store.authenticate(key) is not None


async def _in_copy(store: KeyStore, key: str) -> bool:
    return store.snapshot.lookup(hash_key(key)) is not None


async def _not_in_copy(store: KeyStore, key: str) -> bool:
    return not await _in_copy(store, key)


async def _not_in_copy(store: KeyStore, key: str) -> bool:
    return store.snapshot.lookup(hash_key(key)) is None


async def _on_disk(path: Path, key: str) -> bool:
    def holds() -> bool:
        return path.exists() and hash_key(key).hex() in path.read_text()

    return await asyncio.to_thread(holds)


async def _reachable(store: KeyStore) -> bool:
    return store.snapshot.reachable
