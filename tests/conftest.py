"""Fixtures shared by the whole suite: real PostgreSQL and Redis, isolated per test.

A missing server skips the tests that need it on a developer's machine, and fails them when CI=true,
so CI can never pass by skipping what it was meant to prove.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import redis as redis_sync
from psycopg.conninfo import conninfo_to_dict

from citadel_proxy.config.schema import Database
from tests.audit.conftest import TcpProxy

PG_DSN = os.environ.get("CITADEL_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
REDIS_URL = os.environ.get("CITADEL_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}: CI must run these tests against a real server", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable("PostgreSQL", exc)
    return PG_DSN


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    schema = f"citadel_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        client = redis_sync.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis_sync.RedisError as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix for one test; every key under it is deleted afterwards."""
    prefix = f"citadel-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis_sync.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
async def unused_tcp_port_async() -> AsyncIterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@pytest.fixture
def database(postgres_dsn: str, pg_schema: str) -> Database:
    """The `database:` section for a fresh schema of the test PostgreSQL."""
    params = conninfo_to_dict(postgres_dsn)
    return Database(
        host=str(params.get("host", "127.0.0.1")),
        port=int(params.get("port", 5432)),
        database=str(params.get("dbname", "postgres")),
        user=str(params.get("user", "postgres")),
        password=params.get("password"),  # type: ignore[arg-type]
        ssl_mode="disable",
        db_schema=pg_schema,
    )


@pytest.fixture
async def database_proxy(database: Database) -> AsyncIterator[TcpProxy]:
    """A TCP proxy before that PostgreSQL, which a test can cut and restore (an outage)."""
    tcp = TcpProxy(database.host, database.port)
    await tcp.start()
    yield tcp
    await tcp.cut()
