"""Records stored in PostgreSQL through the stage and the sink: content, conversations, hard strings."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit import AuditOptions, AuditSink, open_audit
from citadel_proxy.audit.errors import StoreUnavailable
from citadel_proxy.audit.queries import AuditQueries
from citadel_proxy.audit.records import AuditMessage, encode_record, new_id
from citadel_proxy.audit.store import PostgresStore, escape_nul, unescape_nul
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import RateLimited
from citadel_proxy.pipeline.types import Completion, Context, Delta, Reply
from citadel_proxy.stages.audit import STAGE, AuditSettings
from tests.audit.conftest import FakeStream, chat_context, drain, fetch, record, services


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


async def test_three_kinds_of_exchange_stored(migrated: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
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
    rows = fetch(
        migrated,
        "SELECT stream, status, error_code, prompt_tokens, completion_tokens, response->>'content',"
        " key_name, model, model_requested, request->'messages'->0->>'content'"
        " FROM audit_requests ORDER BY created_at",
    )
    assert rows == [
        (False, 200, None, 3, 1, "hi", "team-a", "phi3:latest", "phi3", "hello"),
        (True, 200, None, 7, 3, "1 2 3", "team-a", "phi3:latest", "phi3", "count"),
        (False, 429, "rate_limit_exceeded", 0, 0, None, "team-a", "phi3:latest", "phi3", "spam"),
    ]


async def test_conversation_continuity(migrated: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
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
    assert fetch(migrated, "SELECT count(*) FROM conversations") == [(1,)]


HARD = [
    "nul \x00 inside, and a backslash-zero \\0 and \\\\ that must stay as they are",
    "emoji 😀👩‍👩‍👧 and CJK 漢字 and RTL שלום",
    "x" * (1024 * 1024 - 3) + "é\x00",
]


async def test_nul_emoji_and_one_megabyte_stored_faithfully(migrated: Config, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
        contexts = []
        for text in HARD:
            ctx = chat_context(text)
            contexts.append(ctx)
            await exchange(sink, ctx, Reply(completion=Completion(content=text[::-1])))
        await sink.close()
        queries = sink.queries
        assert isinstance(queries, AuditQueries)
        for ctx, text in zip(contexts, HARD, strict=True):
            assert ctx.conversation_id is not None
            detail = await queries.conversation(ctx.conversation_id, limit=10)
            assert detail is not None
            assert [m.content for m in detail.messages] == [text, text[::-1]]
            assert not any(m.truncated for m in detail.messages)
    assert sink.metrics.rejected == 0 and sink.metrics.lost == 0
    [(escaped, request)] = fetch(
        migrated, "SELECT nul_escaped, request FROM audit_requests WHERE request::text LIKE '%%emoji%%'"
    )
    assert escaped is False and request["messages"][0]["content"] == HARD[1]
    stored = fetch(migrated, "SELECT request FROM audit_requests WHERE nul_escaped")
    assert len(stored) == 2
    assert {unescape_nul(r[0])["messages"][0]["content"] for r in stored} == {HARD[0], HARD[2]}


def test_nul_escape_round_trip() -> None:
    value = {"a\x00": ["\\0", "\x00\\", "\\\\0\x00"], "n": 1, "none": None}
    assert unescape_nul(escape_nul(value)) == value
    assert "\x00" not in msgspec.json.encode(escape_nul(value)).decode().replace("\\u0000", "")


async def test_batches_are_idempotent(migrated: Config) -> None:
    assert migrated.database is not None
    conversation = new_id()
    batch = [encode_record(record(n, conversation)) for n in range(10)]
    async with AsyncConnectionPool(
        migrated.database.conninfo(), open=False, kwargs={"autocommit": True}
    ) as pool:
        store = PostgresStore(pool, timeout_s=10)
        await store.insert(batch[:6])
        await store.insert(batch + batch[3:5])  # a replay overlapping what is stored, with duplicates inside
        await store.insert(batch)
    assert fetch(migrated, "SELECT count(*), count(DISTINCT id) FROM audit_requests") == [(10, 10)]
    assert fetch(migrated, "SELECT count(*) FROM messages") == [(10,)]
    assert fetch(migrated, "SELECT count(*) FROM conversations") == [(1,)]


async def test_every_column_of_a_record_and_its_messages_is_stored(migrated: Config) -> None:
    assert migrated.database is not None
    base = record(0, new_id())
    full = msgspec.structs.replace(
        base,
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
