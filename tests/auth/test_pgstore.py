"""Keys in PostgreSQL: create, list, revoke, and revocation reaching other workers at once."""

from __future__ import annotations

import asyncio
import contextlib
import hmac

import psycopg
import pytest

from citadel_proxy.auth.config import AuthConfig
from citadel_proxy.auth.keys import generate_key, hash_key
from citadel_proxy.auth.store import KeyStore, open_key_store
from citadel_proxy.config.schema import Database
from citadel_proxy.errors import InvalidRequest
from tests.auth.conftest import MakeConfig, eventually, wait_listening


async def test_created_key_works_and_is_stored_as_digest(db_store: KeyStore, postgres_dsn: str) -> None:
    new = await db_store.create("svc", ["inference"], requests_per_minute=10, tokens_per_minute=500)
    principal = await db_store.authenticate(new.key)
    assert principal is not None
    assert (principal.name, principal.scopes) == ("svc", frozenset({"inference"}))
    assert (principal.requests_per_minute, principal.tokens_per_minute) == (10, 500)
    assert new.record.prefix == new.key[:12]

    assert db_store.db is not None
    async with db_store.db.pool.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM api_keys")).fetchall()
    dump = repr(rows)
    assert new.key not in dump and new.key[12:] not in dump
    assert bytes(rows[0][2]) == hash_key(new.key)


async def test_list_never_shows_the_key(db_store: KeyStore) -> None:
    new = await db_store.create("a", ["admin"])
    await db_store.authenticate(new.key)
    [record] = await db_store.list()
    assert record.name == "a" and record.source == "database"
    assert new.key not in repr(record)
    assert record.created_at is not None and record.last_used is not None


async def test_names_are_unique_among_live_keys(db_store: KeyStore) -> None:
    await db_store.create("dup", ["inference"])
    with pytest.raises(InvalidRequest):
        await db_store.create("dup", ["inference"])
    assert await db_store.revoke("dup")
    await db_store.create("dup", ["inference"])  # a revoked key's name can be reused
    with pytest.raises(InvalidRequest):
        await db_store.create("bad name!", ["inference"])
    with pytest.raises(InvalidRequest):
        await db_store.create("noscope", [])


async def test_revoked_key_stops_at_once_in_the_same_worker(db_store: KeyStore) -> None:
    new = await db_store.create("gone", ["inference"])
    assert await db_store.authenticate(new.key) is not None  # now cached
    assert await db_store.revoke("gone")
    assert await db_store.authenticate(new.key) is None


async def test_revocation_reaches_another_worker_through_notify(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    # A cache long enough that only the notification can explain the key stopping.
    config = make_config(database, AuthConfig(cache_ttl_s=60))
    worker_a = await open_key_store(config, stack)
    worker_b = await open_key_store(config, stack)
    await wait_listening(worker_a)
    await wait_listening(worker_b)
    new = await worker_a.create("shared", ["inference"])

    async def cached_in_b() -> bool:
        assert await worker_b.authenticate(new.key) is not None
        return worker_b.cache.get(hash_key(new.key)) is not None

    await eventually(cached_in_b)  # the creation's own notification may empty B's cache once
    # B now answers from its cache, for a minute unless told otherwise.

    assert await worker_a.revoke("shared")

    async def refused_by_b() -> bool:
        return await worker_b.authenticate(new.key) is None

    await eventually(refused_by_b)  # milliseconds in practice: NOTIFY is sent at commit


async def test_a_key_created_elsewhere_is_not_hidden_by_a_cached_miss(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    config = make_config(database, AuthConfig(cache_ttl_s=60))
    worker_a, worker_b = await open_key_store(config, stack), await open_key_store(config, stack)
    await wait_listening(worker_b)
    key = generate_key()
    assert await worker_b.authenticate(key) is None  # an unknown key is remembered as unknown...
    await worker_a.create("late", ["inference"], key=key)

    async def known_to_b() -> bool:
        return await worker_b.authenticate(key) is not None

    await eventually(known_to_b)  # ...until any key changes


async def test_without_its_listener_a_worker_does_not_cache(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    store = await open_key_store(make_config(database), stack, listen_changes=False)
    new = await store.create("x", ["inference"])
    assert await store.authenticate(new.key) is not None
    assert store.cache.get(hash_key(new.key)) is None
    # Revoked behind the store's back (no notification heard): the next lookup still sees it.
    assert store.db is not None
    async with store.db.pool.connection() as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = now()")
    assert await store.authenticate(new.key) is None


async def test_database_lookup_compares_in_constant_time(
    db_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = await db_store.create("ct", ["inference"])
    db_store.cache.clear()
    seen: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert await db_store.authenticate(new.key) is not None
    assert hash_key(new.key) in seen


async def test_config_keys_still_work_beside_the_database(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    from tests.auth.test_keys import config_key

    key = generate_key()
    config = make_config(database, AuthConfig(keys=[config_key("cfg", key, ["embeddings"])]))
    store = await open_key_store(config, stack, listen_changes=False)
    assert (await store.authenticate(key)).name == "cfg"  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest, match="config"):
        await store.revoke("cfg")
    assert [r.source for r in await store.list()] == ["config"]


async def test_migration_is_idempotent_and_safe_to_race(
    make_config: MakeConfig, database: Database, postgres_dsn: str
) -> None:
    async def start() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await open_key_store(make_config(database), stack, listen_changes=False)

    await asyncio.gather(*(start() for _ in range(4)))
    async with await psycopg.AsyncConnection.connect(database.conninfo()) as conn:
        cur = await conn.execute("SELECT count(*) FROM api_keys")
        assert (await cur.fetchone()) == (0,)
