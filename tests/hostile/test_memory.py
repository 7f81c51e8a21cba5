"""Large requests hand their memory back (issue 12: 4). The figures are `make bench`'s (bench/bodies.py);
here, that the malloc tuning they rest on takes effect in this process, and that the audit writer keeps
no large record once it is stored (neither its last batch nor a connection's send buffer)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from citadel_proxy import memory
from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.audit.bounds import bounded, within
from citadel_proxy.audit.content import ContentPolicy
from citadel_proxy.audit.records import AuditMessage, build_record, encode_record
from citadel_proxy.audit.store import OWN_CONNECTION_BYTES, PostgresStore
from citadel_proxy.config.schema import Config
from tests.audit.conftest import chat_context, fetch, migrated, record, wait_for  # noqa: F401
from tests.core.conftest import AUTH, CHAT
from tests.fakes.ollama import FakeOllama
from tests.hostile.limits_helpers import gateway_on

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


@glibc
def test_the_mmap_threshold_is_fixed() -> None:
    assert memory.return_large_blocks()


@glibc
async def test_a_burst_of_large_requests_is_trimmed_once() -> None:
    trims = memory._TRIM
    memory.trim_soon()
    first = trims._handle
    memory.trim_soon()
    assert first is not None and first.cancelled() and trims._handle is not None
    trims._handle.cancel()
    trims._run(lambda _pad: 1)
    assert trims._handle is None
    await asyncio.sleep(0)


async def test_a_large_body_schedules_a_trim_once_answered(tmp_path: Path) -> None:
    trims = memory._TRIM
    if trims._handle is not None:
        trims._handle.cancel()
        trims._handle = None
    async with FakeOllama() as fake, gateway_on(tmp_path, fake, "uvicorn") as gw:
        small = {**CHAT, "stream": False}
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(gw.url + "/v1/plain", json=small) as response:
                assert response.status == 200
            assert trims._handle is None
            large = {**small, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
            async with session.post(gw.url + "/v1/plain", json=large) as response:
                assert response.status == 200
        for _ in range(100):  # the server's frame may finish just after the client has the answer
            if trims._handle is not None:
                break
            await asyncio.sleep(0.01)
        assert trims._handle is not None
        trims._handle.cancel()
        trims._handle = None


def large_record(n: int) -> bytes:
    content = "x" * (OWN_CONNECTION_BYTES + 1000)
    message = AuditMessage(role="user", content=content, bytes=len(content))
    return encode_record(msgspec.structs.replace(record(n), messages=[message]))


async def test_a_large_audit_batch_is_not_sent_on_a_pooled_connection(migrated: Config) -> None:  # noqa: F811
    """libpq keeps a connection's send buffer at the size of the largest batch it sent: a pooled one would
    keep a large request's record in the worker for as long as the connection lives."""
    assert migrated.database is not None
    async with AsyncConnectionPool(
        migrated.database.conninfo(), min_size=1, max_size=1, open=False, kwargs={"autocommit": True}
    ) as pool:
        store = PostgresStore(pool, timeout_s=10)
        await store.insert([encode_record(record(0))])
        assert pool.get_stats()["requests_num"] == 1
        await store.insert([large_record(1)])
        assert pool.get_stats()["requests_num"] == 1
        await store.insert([encode_record(record(2))])  # small ones still use the pool
        assert pool.get_stats()["requests_num"] == 2
    assert fetch(migrated, "SELECT count(*), max(length(content)) FROM messages") == [
        (3, OWN_CONNECTION_BYTES + 1000)
    ]


async def test_the_audit_writer_lets_go_of_a_batch_once_stored(migrated: Config, tmp_path: Path) -> None:  # noqa: F811
    """The writer waiting for the next record must not hold the last batch (megabytes after a large
    request) until one comes."""
    encoded = large_record(0)
    held = sys.getrefcount(encoded)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2))
        await wait_for(lambda: not sink.database_failing)
        assert sink.offer_encoded(encoded) is None  # queued, not spooled
        await wait_for(lambda: sink.metrics.written == 1)
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: sys.getrefcount(encoded) == held, timeout_s=2)
        assert sys.getrefcount(encoded) == held
    forget_trim()


def forget_trim() -> memory._Trim:
    """The process's trim, with none pending (one scheduled by an earlier test would be counted)."""
    trims = memory._TRIM
    if trims._handle is not None:
        trims._handle.cancel()
        trims._handle = None
    return trims


async def test_a_large_audit_batch_schedules_a_trim_once_stored(migrated: Config, tmp_path: Path) -> None:  # noqa: F811
    """The record is written after the response, whose trim may have run by then."""
    trims = forget_trim()
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2))
        await wait_for(lambda: not sink.database_failing)
        sink.offer_encoded(encode_record(record(0)))
        await wait_for(lambda: sink.metrics.written == 1)
        assert trims._handle is None  # a small batch leaves no trim behind
        assert sink.offer_encoded(large_record(1)) is None
        await wait_for(lambda: sink.metrics.written == 2)
        await wait_for(lambda: trims._handle is not None, timeout_s=2)
        forget_trim()


def test_a_large_record_is_shortened_without_being_encoded_whole() -> None:
    """A large request's text is in its record twice (the request document and the new turn): encoded
    whole, with copies of it made to shorten it, the record took 8.6 times the text at its peak (now 3)."""
    text = 'a pasted document, "quoted", \\ é\x00\n' * 100_000  # 3.6 MB, escapes included
    message = AuditMessage(role="user", content=text, bytes=len(text.encode()))
    large = msgspec.structs.replace(
        record(0), request={"messages": [{"role": "user", "content": text}]}, messages=[message]
    )
    max_bytes = 1024 * 1024
    tracemalloc.start()
    try:
        shortened = bounded(large, max_bytes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shortened == within(large, encode_record(large), max_bytes)  # the same record as before
    assert peak < 4 * len(text)


def test_a_large_request_s_record_keeps_no_copy_of_its_json() -> None:
    """The request's JSON, kept while the messages were encoded and hashed, was one more copy of the body
    at the record's peak: 5.2 times the text (tracemalloc), now 3.7."""
    text = "a pasted document. " * 200_000
    ctx = chat_context(text)
    tracemalloc.start()
    try:
        build_record(
            ctx, record_id="large", started_at=datetime.now(UTC), policy=ContentPolicy(), answer=None
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4.5 * len(text)
