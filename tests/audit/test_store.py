"""Records stored through the stage and the sink, in PostgreSQL and in SQLite: content, conversations,
hard strings."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit import AuditOptions, AuditSink, open_audit
from citadel_proxy.audit.errors import StoreRejected, StoreUnavailable
from citadel_proxy.audit.ports import AuditStore
from citadel_proxy.audit.records import AuditMessage, AuditRecord, encode_record, new_id
from citadel_proxy.audit.refusals import RefusalRecord, encode_refusal
from citadel_proxy.audit.service import open_pool
from citadel_proxy.audit.sqlite_file import SqliteFile, sqlite_path
from citadel_proxy.audit.sqlite_store import SqliteStore
from citadel_proxy.audit.store import (
    _INSERT,
    OWN_CONNECTION_BYTES,
    PostgresStore,
    encode_batch,
    escape_nul,
    unescape_nul,
    with_statement_timeout,
)
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import RateLimited
from citadel_proxy.pipeline.types import Completion, Context, Delta, Reply
from citadel_proxy.stages.audit import STAGE, AuditSettings
from tests.audit.conftest import (
    FakeStream,
    chat_context,
    drain,
    execute,
    fetch,
    fetch_any,
    make_config,
    record,
    services,
    stored_records,
)


async def exchange(sink: AuditSink, ctx: Context, reply: Reply | Exception, **settings: object) -> None:
    stage = STAGE.build(AuditSettings(**settings), services(sink))  # type: ignore[arg-type]

    async def inner(_ctx: Context) -> Reply:
        if isinstance(reply, Exception):
            raise reply
        return reply

    with contextlib.suppress(RateLimited):
        result = await stage(ctx, inner)
        if result.stream is not None:
            await drain(result.stream)


def options(tmp_path: Path) -> AuditOptions:
    return AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2, batch_size=50)


async def test_three_kinds_of_exchange_stored(any_store: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(any_store, stack, options(tmp_path))
        plain = chat_context("hello")
        await exchange(
            sink, plain, Reply(completion=Completion(content="hi", prompt_tokens=3, completion_tokens=1))
        )
        streamed = chat_context("count", stream=True)
        await exchange(
            sink,
            streamed,
            Reply(stream=FakeStream(streamed, [[Delta(content="1 2")], [Delta(content=" 3")]])),
        )
        refused = chat_context("spam")
        await exchange(sink, refused, RateLimited("too many requests"))
    assert sink.metrics.written == 3 and sink.metrics.lost == 0 and sink.metrics.spooled == 0
    # (SQLite's 0 and 1 compare equal to False and True.)
    rows = fetch_any(
        any_store,
        "SELECT stream, status, error_code, prompt_tokens, completion_tokens, response->>'content',"
        " key_name, model, model_requested, request->'messages'->0->>'content'"
        " FROM audit_requests ORDER BY created_at",
    )
    assert rows == [
        (False, 200, None, 3, 1, "hi", "team-a", "phi3:latest", "phi3", "hello"),
        (True, 200, None, 7, 3, "1 2 3", "team-a", "phi3:latest", "phi3", "count"),
        (False, 429, "rate_limit_exceeded", 0, 0, None, "team-a", "phi3:latest", "phi3", "spam"),
    ]


async def test_conversation_continuity(any_store: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(any_store, stack, options(tmp_path))
        first = chat_context("What is 2+2?")
        await exchange(sink, first, Reply(completion=Completion(content="4")))
        conversation = first.response_headers["X-Conversation-ID"]
        history: tuple[str, ...] = ("4",)
        asked = ["What is 2+2?"]
        for question, answer in [("And times 3?", "12"), ("Minus 1?", "11")]:
            asked.append(question)
            users = list(asked)
            ctx = chat_context(*users, assistant_turns=history, headers={"X-Conversation-ID": conversation})
            await exchange(sink, ctx, Reply(completion=Completion(content=answer)))
            assert ctx.response_headers["X-Conversation-ID"] == conversation
            history += (answer,)
        await sink.close()
        assert sink.queries is not None
        detail = await sink.queries.conversation(conversation, limit=100)
    assert detail is not None
    assert [(m.role, m.content) for m in detail.messages] == [
        ("user", "What is 2+2?"),
        ("assistant", "4"),
        ("user", "And times 3?"),
        ("assistant", "12"),
        ("user", "Minus 1?"),
        ("assistant", "11"),
    ]
    assert fetch_any(any_store, "SELECT count(*) FROM conversations") == [(1,)]


HARD = [
    "nul \x00 inside, and a backslash-zero \\0 and \\\\ that must stay as they are",
    "emoji 😀👩‍👩‍👧 and CJK 漢字 and RTL שלום",
    "x" * (1024 * 1024 - 3) + "é\x00",
]


async def test_nul_emoji_and_one_megabyte_stored_faithfully(any_store: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(any_store, stack, options(tmp_path))
        contexts = []
        for text in HARD:
            ctx = chat_context(text)
            contexts.append(ctx)
            await exchange(sink, ctx, Reply(completion=Completion(content=text[::-1])))
        await sink.close()
        queries = sink.queries
        assert queries is not None
        for ctx, text in zip(contexts, HARD, strict=True):
            assert ctx.conversation_id is not None
            detail = await queries.conversation(ctx.conversation_id, limit=10)
            assert detail is not None
            assert [m.content for m in detail.messages] == [text, text[::-1]]
            assert not any(m.truncated for m in detail.messages)
    assert sink.metrics.rejected == 0 and sink.metrics.lost == 0
    if any_store.database is None:
        return  # SQLite text holds NUL as it is: nothing is escaped
    [(escaped, request)] = fetch(
        any_store, "SELECT nul_escaped, request FROM audit_requests WHERE request::text LIKE '%%emoji%%'"
    )
    assert escaped is False and request["messages"][0]["content"] == HARD[1]
    stored = fetch(any_store, "SELECT request FROM audit_requests WHERE nul_escaped")
    assert len(stored) == 2
    assert {unescape_nul(r[0])["messages"][0]["content"] for r in stored} == {HARD[0], HARD[2]}


def test_nul_escape_round_trip() -> None:
    value = {"a\x00": ["\\0", "\x00\\", "\\\\0\x00"], "n": 1, "none": None}
    assert unescape_nul(escape_nul(value)) == value
    assert "\x00" not in msgspec.json.encode(escape_nul(value)).decode().replace("\\u0000", "")


@contextlib.asynccontextmanager
async def bare_store(config: Config) -> AsyncIterator[AuditStore]:
    """The config's store without the writer in front of it."""
    if config.database is not None:
        conninfo = config.database.conninfo()
        async with AsyncConnectionPool(conninfo, open=False, kwargs={"autocommit": True}) as pool:
            yield PostgresStore(pool, timeout_s=10)
        return
    file = SqliteFile(sqlite_path(config, config.audit), timeout_s=10, name="test-sqlite")
    try:
        store = SqliteStore(file, timeout_s=10)
        await store.migrate()
        yield store
    finally:
        await file.close()


async def test_one_batch_with_a_nul_stores_every_record_and_escapes_only_that_one(migrated: Config) -> None:
    # The batch is sent as it is first; PostgreSQL refuses the NUL, and the same batch goes again with
    # that record escaped: nothing set aside, the clean record and the refusal stored as they were.
    clean, holding = record(1), msgspec.structs.replace(record(2), request={"text": "a\x00b"})
    refused = RefusalRecord(
        id=new_id(), first_at=clean.time, last_at=clean.time, count=3, client="10.0.0.1\x00",
        route="/v1/chat/completions", status=401, reason="invalid_api_key",
    )  # fmt: skip
    async with bare_store(migrated) as store:
        await store.insert([encode_record(clean), encode_record(holding), encode_refusal(refused)])
    stored = fetch(migrated, "SELECT id::text, nul_escaped, request FROM audit_requests ORDER BY created_at")
    assert stored == [(clean.id, False, {"n": 1}), (holding.id, True, {"text": "a\\0b"})]
    assert unescape_nul(stored[1][2]) == {"text": "a\x00b"}
    assert fetch(migrated, "SELECT count, client_addr FROM audit_refusals") == [(3, "10.0.0.1\\0")]


async def test_batches_are_idempotent(any_store: Config) -> None:
    conversation = new_id()
    batch = [encode_record(record(n, conversation)) for n in range(10)]
    async with bare_store(any_store) as store:
        await store.insert(batch[:6])
        await store.insert(batch + batch[3:5])  # a replay overlapping what is stored, with duplicates inside
        await store.insert(batch)
    assert fetch_any(any_store, "SELECT count(*), count(DISTINCT id) FROM audit_requests") == [(10, 10)]
    assert fetch_any(any_store, "SELECT count(*) FROM messages") == [(10,)]
    assert fetch_any(any_store, "SELECT count(*) FROM conversations") == [(1,)]


def full_record() -> AuditRecord:
    """A record with every field set, its messages in each content mode's shape."""
    return msgspec.structs.replace(
        record(0, new_id()),
        key_name="team-a",
        client="203.0.113.9",
        status=429,
        error_code="rate_limit_exceeded",
        ttft_ms=1.5,
        prompt_tokens=7,
        completion_tokens=3,
        cache_hit=True,
        content_mode="hashed",
        response={"content": "hi"},
        messages=[
            AuditMessage(role="system", content="be brief", sha256="aa", bytes=8),
            AuditMessage(role="user", sha256="bb", bytes=5),  # hashed: no content
            AuditMessage(role="assistant", content="tr", sha256="cc", bytes=9, truncated=True),
        ],
    )


async def test_every_field_of_a_record_comes_back_from_sqlite(tmp_path: Path) -> None:
    config = make_config(None, "", tmp_path)
    full = full_record()
    async with bare_store(config) as store:
        await store.insert([encode_record(full)])
    assert stored_records(sqlite_path(config, config.audit)) == [full]


async def test_sqlite_refuses_what_postgresql_refuses(tmp_path: Path) -> None:
    config = make_config(None, "", tmp_path)
    async with bare_store(config) as store:
        for bad in [
            msgspec.structs.replace(record(0), duration_ms=-1.0),  # a CHECK of both schemas
            msgspec.structs.replace(record(1), conversation_id="not an id!"),  # opaque ids: [A-Za-z0-9._:-]
        ]:
            with pytest.raises(StoreRejected):
                await store.insert([encode_record(bad)])
    assert fetch_any(config, "SELECT count(*) FROM audit_requests") == [(0,)]


async def test_every_column_of_a_record_and_its_messages_is_stored(migrated: Config) -> None:
    assert migrated.database is not None
    full = full_record()
    async with AsyncConnectionPool(
        migrated.database.conninfo(), open=False, kwargs={"autocommit": True}
    ) as pool:
        await PostgresStore(pool, timeout_s=10).insert([encode_record(full)])
    [row] = fetch(
        migrated,
        "SELECT created_at, conversation_id::text, key_name, client_addr, status, error_code, ttft_ms,"
        " prompt_tokens, completion_tokens, cache_hit, content_mode, nul_escaped, response"
        " FROM audit_requests",
    )
    assert row == (
        full.time, full.conversation_id, "team-a", "203.0.113.9", 429, "rate_limit_exceeded", 1.5, 7, 3,
        True, "hashed", False, {"content": "hi"},
    )  # fmt: skip
    messages = fetch(
        migrated,
        "SELECT position, role, content, content_sha256, content_bytes, truncated, created_at FROM messages"
        " ORDER BY position",
    )
    assert messages == [
        (0, "system", "be brief", "aa", 8, False, full.time),
        (1, "user", None, "bb", 5, False, full.time),
        (2, "assistant", "tr", "cc", 9, True, full.time),
    ]


async def test_a_timed_out_insert_says_why(migrated: Config) -> None:
    """A write past write_timeout_s ends with its reason, not `...records now: ` and nothing."""
    assert migrated.database is not None
    with psycopg.connect(migrated.database.conninfo()) as blocker:
        blocker.execute("LOCK TABLE audit_requests IN ACCESS EXCLUSIVE MODE")  # held until the end
        async with AsyncConnectionPool(
            migrated.database.conninfo(), open=False, kwargs={"autocommit": True}
        ) as pool:
            try:
                await PostgresStore(pool, timeout_s=0.3).insert([encode_record(record(0))])
            except StoreUnavailable as exc:
                message = str(exc)
            else:
                raise AssertionError("the insert went through a locked table")
    assert message.endswith("no answer within write_timeout_s (0.3 s) for 1 records"), message


async def test_a_timed_out_sqlite_insert_says_why(tmp_path: Path) -> None:
    """As PostgreSQL's: a write past write_timeout_s on the embedded store ends with its reason."""
    config = make_config(None, "", tmp_path)
    path = sqlite_path(config, config.audit)
    file = SqliteFile(path, timeout_s=1, name="test-sqlite")
    try:
        store = SqliteStore(file, timeout_s=0.2)
        await store.migrate()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holding the file's write lock
        try:
            await store.insert([encode_record(record(0))])
        except StoreUnavailable as exc:
            message = str(exc)
        else:
            raise AssertionError("the insert went through a locked file")
        finally:
            blocker.close()
    finally:
        await file.close()
    assert message.endswith("no answer within write_timeout_s (0.2 s) for 1 records"), message


async def test_sqlite_keeps_another_keys_record_out_of_a_conversation(tmp_path: Path) -> None:
    """As PostgreSQL's insert does, for records whose request-time claim could not be checked."""
    config = make_config(None, "", tmp_path)
    owner = msgspec.structs.replace(record(0, "call_8f2a:leg-1"), key_name="team-a")
    other = msgspec.structs.replace(record(1, "call_8f2a:leg-1"), key_name="team-b")
    again = msgspec.structs.replace(record(2, "call_8f2a:leg-1"), key_name="team-a")
    async with bare_store(config) as store:
        await store.insert([encode_record(owner)])
        await store.insert([encode_record(other), encode_record(again)])
    rows = fetch_any(config, "SELECT id, conversation_id, key_name FROM audit_requests ORDER BY created_at")
    assert [(conversation, key) for _, conversation, key in rows] == [
        ("call_8f2a:leg-1", "team-a"),
        (str(uuid.UUID(other.id)), "team-b"),
        ("call_8f2a:leg-1", "team-a"),
    ]
    owners = fetch_any(config, "SELECT id, key_name FROM conversations ORDER BY id")
    assert sorted(owners) == sorted([("call_8f2a:leg-1", "team-a"), (str(uuid.UUID(other.id)), "team-b")])


async def test_the_server_stops_a_batch_at_write_timeout_s(migrated: Config) -> None:
    """The audit pool's sessions carry the statement timeout: PostgreSQL cancels a blocked batch itself,
    on a pooled connection and on a large batch's own, with no cancel from the gateway (its own limit
    is far later here)."""
    assert migrated.database is not None
    large = msgspec.structs.replace(record(1), response={"content": "x" * (OWN_CONNECTION_BYTES + 1)})
    with psycopg.connect(migrated.database.conninfo()) as blocker:
        blocker.execute("LOCK TABLE audit_requests IN ACCESS EXCLUSIVE MODE")  # held until the end
        async with contextlib.AsyncExitStack() as stack:
            pool = await open_pool(migrated.database, AuditOptions(write_timeout_s=0.3), stack)
            store = PostgresStore(pool, timeout_s=30)
            for batch in ([encode_record(record(0))], [encode_record(large)]):
                with pytest.raises(StoreUnavailable) as caught:
                    await store.insert(batch)
                assert isinstance(caught.value.__cause__, psycopg.errors.QueryCanceled)
                assert "statement timeout" in str(caught.value.__cause__)


def test_the_statement_timeout_joins_the_options_already_given() -> None:
    conninfo = with_statement_timeout("host=db options='-c search_path=audit'", 2.5)
    assert conninfo_to_dict(conninfo)["options"] == "-c search_path=audit -c statement_timeout=2500"
    assert conninfo_to_dict(with_statement_timeout("host=db", 0))["options"] == "-c statement_timeout=1"


async def test_a_session_the_server_ended_is_replaced_when_taken(migrated: Config) -> None:
    """A backend ended while its connection sat in the pool (a restart, pg_terminate_backend): the
    next batch goes through on a new session, with no round trip to check the ones that are alive."""
    assert migrated.database is not None
    async with contextlib.AsyncExitStack() as stack:
        pool = await open_pool(migrated.database, AuditOptions(), stack)
        await pool.wait()
        async with pool.connection() as conn:
            ended = conn.pgconn.backend_pid
        with psycopg.connect(migrated.database.conninfo(), autocommit=True) as admin:
            # Waits until the backend is gone (it said why and closed the socket before it went).
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (ended,))
        await PostgresStore(pool, timeout_s=10).insert([encode_record(record(0))])
        async with pool.connection() as conn:
            assert conn.pgconn.backend_pid != ended
    assert fetch(migrated, "SELECT count(*) FROM audit_requests") == [(1,)]


def _scans(plan: dict[str, object]) -> set[tuple[object, object]]:
    """(node type, table) of every node of an EXPLAIN (FORMAT JSON) plan."""
    found = {(plan.get("Node Type"), plan.get("Relation Name"))}
    for child in plan.get("Plans", ()):  # type: ignore[attr-defined]
        found |= _scans(child)
    return found


def test_a_batch_looks_up_its_conversations_by_key(migrated: Config) -> None:
    """The insert finds each record's conversation through the key, whatever the planner thinks of the
    table's size: joined as a table, the conversations were read whole and hashed for every batch."""
    execute(
        migrated,
        "INSERT INTO conversations SELECT 'c-' || n, now(), 'team-a', 'phi3:latest'"
        " FROM generate_series(1, 5000) AS n",
    )
    batch = encode_batch([encode_record(record(n, f"c-{n}")) for n in range(50)])
    assert migrated.database is not None
    with psycopg.connect(migrated.database.conninfo(), autocommit=True) as conn:
        explained = conn.execute(b"EXPLAIN (FORMAT JSON) " + _INSERT, (batch,)).fetchone()
    assert explained is not None
    scans = _scans(explained[0][0]["Plan"])
    assert ("Index Scan", "conversations") in scans
    assert ("Seq Scan", "conversations") not in scans
