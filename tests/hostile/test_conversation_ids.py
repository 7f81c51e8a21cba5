"""X-Conversation-ID: a client's own ids are accepted, and a conversation belongs to the key that opened it.

Another key naming it gets 403 permission_error `conversation_not_owned` (its refused request is still
recorded, in no conversation), in every worker and after a restart, with PostgreSQL or without it.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import aiohttp
import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit import AuditOptions, AuditSink, open_audit
from citadel_proxy.audit.records import encode_record
from citadel_proxy.audit.store import PostgresStore
from citadel_proxy.auth.keys import generate_key, hash_key
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import GatewayError
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.stages.audit import STAGE, AuditSettings
from tests.audit.conftest import (  # noqa: F401
    chat_context,
    fetch,
    make_config,
    migrated,
    record,
    services,
    wait_for,
)
from tests.audit.test_gateway_audit import database_section
from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama

HEADER = "X-Conversation-ID"


async def ask(sink: AuditSink, key: str, conversation: str | None = None) -> tuple[int, str | None]:
    """One chat through the audit stage: the status and the conversation id answered (or the error)."""
    ctx: Context = chat_context("hello", key=key, headers={HEADER: conversation} if conversation else None)
    stage = STAGE.build(AuditSettings(), services(sink))  # type: ignore[arg-type]

    async def answer(_ctx: Context) -> Reply:
        return Reply(completion=Completion(content="hi"))

    try:
        await stage(ctx, answer)
    except GatewayError as exc:
        return exc.status, exc.code
    return 200, ctx.response_headers[HEADER]


def options(tmp_path: Path) -> AuditOptions:
    return AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2)


@pytest.mark.parametrize(
    "given",
    ["call_8f2a:leg-1.a", "sess-42", "x" * 128, "urn:uuid:0190A8F8-0000-7000-8000-000000000001"],
)
async def test_a_clients_own_id_is_kept_and_stored(migrated: Config, tmp_path: Path, given: str) -> None:  # noqa: F811
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
        status, answered = await ask(sink, "team-a", given)
        assert status == 200
        expected = "0190a8f8-0000-7000-8000-000000000001" if given.startswith("urn:") else given
        assert answered == expected
        assert await ask(sink, "team-a", given) == (200, expected)
        await sink.close()
        assert sink.queries is not None
        detail = await sink.queries.conversation(expected, limit=10)
    assert detail is not None and [m.content for m in detail.messages] == ["hello", "hi", "hello", "hi"]


@pytest.mark.parametrize("given", ["a b", "x" * 129, "café", "a/b", "a;b", "a\tb"])
async def test_other_ids_are_a_400(tmp_path: Path, given: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(make_config(None, "", tmp_path), stack, options(tmp_path))
        assert await ask(sink, "team-a", given) == (400, "invalid_request")


async def test_another_key_cannot_append_in_any_worker_or_after_a_restart(
    migrated: Config,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        worker1 = await open_audit(migrated, stack, options(tmp_path))
        worker2 = await open_audit(migrated, stack, options(tmp_path))
        assert await ask(worker1, "team-a", "session-1") == (200, "session-1")
        _, minted = await ask(worker1, "team-a")
        assert minted is not None
        assert await ask(worker1, "team-b", minted) == (403, "conversation_not_owned")  # still queued
        await wait_for(lambda: worker1.metrics.written == 3)
        for worker in (worker1, worker2):
            assert await ask(worker, "team-b", "session-1") == (403, "conversation_not_owned")
            assert await ask(worker, "team-b", minted.upper()) == (403, "conversation_not_owned")
        assert await ask(worker2, "team-a", "session-1") == (200, "session-1")
    async with contextlib.AsyncExitStack() as stack:
        restarted = await open_audit(migrated, stack, options(tmp_path))
        assert await ask(restarted, "team-b", "session-1") == (403, "conversation_not_owned")
        assert await ask(restarted, "team-b", "session-2") == (200, "session-2")  # an id of its own
    keys = fetch(migrated, "SELECT DISTINCT key_name FROM audit_requests WHERE conversation_id = 'session-1'")
    assert keys == [("team-a",)]
    refused = fetch(migrated, "SELECT conversation_id FROM audit_requests WHERE status = 403")
    assert refused == [(None,)] * 6


async def test_the_insert_keeps_another_keys_records_apart(migrated: Config) -> None:  # noqa: F811
    """What the request-time claim could not check (PostgreSQL was down then) never joins a foreign
    conversation: the record gets a conversation of its own, named by its id."""
    assert migrated.database is not None
    mine = msgspec.structs.replace(record(0, "shared"), key_name="team-a")
    theirs = [msgspec.structs.replace(record(n, "shared"), key_name="team-b") for n in (1, 2)]
    async with AsyncConnectionPool(
        migrated.database.conninfo(), open=False, kwargs={"autocommit": True}
    ) as pool:
        store = PostgresStore(pool, timeout_s=10)
        await store.insert([encode_record(mine), encode_record(theirs[0])])  # the same batch
        await store.insert([encode_record(theirs[1])])  # a later one
        await store.insert([encode_record(r) for r in [mine, *theirs]])  # replayed: no change
    rows = dict(fetch(migrated, "SELECT id::text, conversation_id FROM audit_requests"))
    assert rows[mine.id] == "shared"
    assert [rows[r.id] for r in theirs] == [r.id for r in theirs]
    assert fetch(migrated, "SELECT key_name FROM conversations WHERE id = 'shared'") == [("team-a",)]
    assert fetch(migrated, "SELECT count(*) FROM messages WHERE conversation_id = 'shared'") == [(1,)]


async def test_without_a_database_too(tmp_path: Path) -> None:
    config = make_config(None, "", tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        worker1 = await open_audit(config, stack, options(tmp_path))
        worker2 = await open_audit(config, stack, options(tmp_path))
        given = str(uuid.uuid4())
        assert await ask(worker1, "team-a", given) == (200, given)
        assert await ask(worker2, "team-b", given) == (403, "conversation_not_owned")
        assert await ask(worker2, "team-a", given) == (200, given)
    async with contextlib.AsyncExitStack() as stack:
        restarted = await open_audit(config, stack, options(tmp_path))
        assert await ask(restarted, "team-b", given) == (403, "conversation_not_owned")


async def test_through_the_gateway(tmp_path: Path, postgres_dsn: str, pg_schema: str) -> None:
    """The real app: a voice agent's own session id works; another key gets 403 in OpenAI's shape."""
    other = generate_key()
    extra_keys = f"    - {{name: other, sha256: {hash_key(other).hex()}, scopes: [inference]}}"
    session_id = "voice-call:2026-03-01.42"
    async with FakeOllama(behavior=Behavior.counted(3)) as fake:
        config = write_config(
            tmp_path,
            fake.port,
            REPO / "pipelines",
            extra=database_section(postgres_dsn, pg_schema),
            extra_keys=extra_keys,
        )
        async with running_gateway(config, fake) as gw, aiohttp.ClientSession() as http:
            mine = AUTH | {HEADER: session_id}
            theirs = {"Authorization": f"Bearer {other}", HEADER: session_id}
            async with http.post(gw.url + "/v1/voice/chat/completions", json=CHAT, headers=mine) as r:
                await r.read()
                assert r.status == 200 and r.headers[HEADER] == session_id
            for path in ("/v1/voice/chat/completions", "/v1/chat/completions"):
                async with http.post(gw.url + path, json=CHAT, headers=theirs) as r:
                    body = await r.json()
                    assert r.status == 403, body
                    assert body["error"]["type"] == "permission_error"
                    assert body["error"]["code"] == "conversation_not_owned"
                    assert body["error"]["param"] == HEADER
