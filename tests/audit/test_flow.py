"""Records kept flowing: bounded records, batches cut by bytes, attempts counted, outages never blamed."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.audit.bounds import within
from citadel_proxy.audit.content import ContentMode, ContentPolicy
from citadel_proxy.audit.deadletter import Attempts, dead_letters, set_aside
from citadel_proxy.audit.metrics import AuditSeries
from citadel_proxy.audit.records import (
    Answer,
    AuditMessage,
    AuditRecord,
    Failure,
    build_record,
    encode_record,
    head_and_tail,
    new_id,
)
from citadel_proxy.audit.sink import batches
from citadel_proxy.config.schema import Config
from tests.audit.conftest import TcpProxy, chat_context, fetch, make_config, record, wait_for
from tests.audit.test_outage import through


def test_batches_are_cut_by_count_and_by_bytes() -> None:
    records = [b"a" * 10, b"b" * 10, b"c" * 30, b"d" * 5, b"e" * 5, b"f" * 5]
    assert list(batches(records, 10, 25)) == [records[:2], [records[2]], records[3:]]
    assert list(batches(records, 2, 1000)) == [records[:2], records[2:4], records[4:]]
    assert list(batches([], 10, 10)) == []


def test_head_and_tail() -> None:
    assert head_and_tail(list(range(10)), 4) == ([0, 1, 8, 9], 6)
    assert head_and_tail(list(range(10)), 3) == ([0, 1, 9], 7)
    assert head_and_tail(list(range(3)), 3) == ([0, 1, 2], 0)


def test_a_long_turn_keeps_its_head_and_tail_and_says_so() -> None:
    ctx = chat_context(*(f"m{n}" for n in range(50)))
    built = build_record(
        ctx,
        record_id=new_id(),
        started_at=record(0).time,
        policy=ContentPolicy(),
        answer=Answer(content=["ok"]),
        max_messages=10,
    )
    assert [m.content for m in built.messages] == ["m0", "m1", "m2", "m3", "m4"] + [
        f"m{n}" for n in range(45, 50)
    ] + ["ok"]
    assert len(msgspec.json.decode(encode_record(built))["request"]["messages"]) == 10
    assert built.truncation is not None
    assert (built.truncation.messages_omitted, built.truncation.request_messages_omitted) == (40, 40)
    short = build_record(
        chat_context("hi"), record_id=new_id(), started_at=record(0).time, policy=ContentPolicy(), answer=None
    )
    assert short.truncation is None


def test_a_built_record_has_each_field_from_its_own_source() -> None:
    # build_record gives AuditRecord's fields by position: every one here has a value no other has.
    ctx = chat_context("hi", model="m1")
    ctx.route, ctx.client, ctx.conversation_id, ctx.backend = "/route", "10.0.0.9", "conv-1", "b1"
    ctx.model_requested, ctx.attempts = "asked", ["b0", "b1"]
    ctx.outcome.prompt_tokens, ctx.outcome.completion_tokens, ctx.outcome.cache_hit = 3, 5, True
    ctx.outcome.first_token_at, ctx.outcome.finished_at = ctx.started + 0.25, ctx.started + 0.5
    started = record(0).time
    built = build_record(
        ctx,
        record_id="rid",
        started_at=started,
        policy=ContentPolicy("hashed"),
        answer=Answer(content=["ok"]),
    )
    assert (built.id, built.time, built.route, built.pipeline, built.stream) == (
        "rid", started, "/route", ctx.pipeline.name, False,
    )  # fmt: skip
    assert (built.model_requested, built.model, built.key_name, built.client, built.conversation_id) == (
        "asked", "m1:latest", "team-a", "10.0.0.9", "conv-1",
    )  # fmt: skip
    assert (built.status, built.error_code, built.prompt_tokens, built.completion_tokens) == (200, None, 3, 5)
    assert (built.ttft_ms, built.duration_ms, built.cache_hit) == (
        pytest.approx(250.0),
        pytest.approx(500.0),
        True,
    )
    assert (built.content_mode, built.truncation, built.backend, built.attempts) == (
        "hashed",
        None,
        "b1",
        ["b0", "b1"],
    )
    assert [m.role for m in built.messages] == ["user", "assistant"]
    assert msgspec.json.decode(encode_record(built))["request"]["model"] == "m1:latest"


def test_an_oversize_record_is_shortened_within_the_limit_keeping_its_digests() -> None:
    big = msgspec.structs.replace(
        record(0),
        request={"messages": ["x" * 50_000]},
        response={"content": "y" * 50_000},
        messages=[AuditMessage(role="user", content="é" * 30_000, sha256="ab" * 32, bytes=60_000)] * 4,
    )
    encoded = encode_record(big)
    assert within(big, encoded, len(encoded)) is encoded
    shortened = within(big, encoded, 64 * 1024)
    assert len(shortened) <= 64 * 1024
    kept = msgspec.json.decode(shortened, type=AuditRecord)
    assert kept.truncation is not None and kept.truncation.record_bytes == len(encoded)
    assert kept.request["bytes"] > 50_000 and len(kept.request["sha256"]) == 64
    assert all(m.truncated and m.sha256 == "ab" * 32 and m.bytes == 60_000 for m in kept.messages)
    assert all(m.content and set(m.content) == {"é"} for m in kept.messages)  # whole characters only
    # Far too small for the messages: metadata and digests only, still noted.
    tiny = msgspec.json.decode(within(big, encoded, 4096), type=AuditRecord)
    assert tiny.messages[0].content is None and tiny.truncation is not None


def test_attempts_survive_a_restart_and_are_forgotten(tmp_path: Path) -> None:
    attempts = Attempts.load(tmp_path)
    assert not attempts and attempts.charge("a") == 1 and attempts.charge("a") == 2
    again = Attempts.load(tmp_path)
    assert again.count("a") == 2 and again.count("b") == 0
    again.forget(["a"])
    assert not (tmp_path / "attempts.json").exists() and not Attempts.load(tmp_path)
    (tmp_path / "attempts.json").write_bytes(b'{"a": 1')  # torn by a crash
    assert not Attempts.load(tmp_path)


def test_dead_letters_listed_once_each_oldest_first(tmp_path: Path) -> None:
    first, second = record(1), record(2)
    slot = tmp_path / "slot-0"
    slot.mkdir()
    set_aside(slot, first.id, encode_record(first), 3, "timed out")
    set_aside(slot, second.id, encode_record(second), 3, "timed out")
    set_aside(slot, first.id, encode_record(first), 3, "timed out")  # again, after a crash
    with (slot / "dead-letter.jsonl").open("ab") as file:
        file.write(b'{"id": "torn')
    listed = [letter.id for _, letter in dead_letters(tmp_path)]
    assert listed == [first.id, second.id]


async def test_an_outage_never_counts_against_a_record(
    proxy: TcpProxy, migrated: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL down through many retries: every record waits, none is set aside."""
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.05, write_timeout_s=0.5, max_attempts=1)
    caplog.set_level(logging.INFO, logger="citadel_proxy.audit.sink")
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(through(proxy, migrated), stack, opts)
        await proxy.cut()
        records = [record(n) for n in range(5)]
        for one in records:
            await sink.submit(one)
        retries = lambda: sum("still unavailable" in r.message for r in caplog.records)  # noqa: E731
        await wait_for(lambda: retries() >= 5)
        await proxy.restore()
        await wait_for(lambda: sink.metrics.replayed == 5)
    assert sink.metrics.dead_lettered == 0 and not dead_letters(tmp_path / "spool")
    stored = {row[0] for row in fetch(migrated, "SELECT id::text FROM audit_requests")}
    assert stored == {r.id for r in records}


async def test_dead_lettered_records_are_exported(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(make_config(None, "", tmp_path), stack, AuditOptions(spool_dir=str(tmp_path)))
        registry = CollectorRegistry()
        series = AuditSeries(registry, sink)
        sink.metrics.dead_lettered += 2
        series.refresh()
    assert b'citadel_audit_records_total{outcome="dead_lettered"} 2.0' in generate_latest(registry)


@pytest.mark.parametrize("mode", ["full", "hashed", "none"])
def test_an_answers_document_and_message_in_each_mode(mode: ContentMode) -> None:
    from citadel_proxy.pipeline.types import ToolCall, ToolFunction

    call = ToolCall(function=ToolFunction(name="f", arguments=msgspec.Raw(b'{"a":1}')))
    calls_json = '[{"function":{"name":"f","arguments":{"a":1}}}]'
    policy = ContentPolicy(mode, max_bytes=8)
    cases = [  # answer, its document's content, the assistant message's text before the mode
        (Answer(content=["ok"], finish_reason="stop"), "ok", "ok"),
        (Answer(content=["", ""], tool_calls=[call]), "", calls_json),  # tool calls alone: their JSON
        (Answer(content=["é" * 5, "!"]), "é" * 5 + "!", "é" * 5 + "!"),  # 11 bytes: over the limit
        (Answer(content=[]), "", ""),
    ]
    for answer, content, said in cases:
        ctx = chat_context("hi")
        ctx.outcome.context_truncated = answer.tool_calls is not None
        built = build_record(ctx, record_id=new_id(), started_at=record(0).time, policy=policy, answer=answer)
        assert built.response is not None
        assert built.response["content"] == policy.document(content)
        assert (built.response.get("tool_calls") is not None) == (answer.tool_calls is not None)
        assert built.response.get("context_truncated", False) == ctx.outcome.context_truncated
        assert built.response.get("finish_reason") == answer.finish_reason
        [_user, assistant] = built.messages
        kept = policy.keep(said)
        assert (assistant.role, assistant.sha256, assistant.bytes) == ("assistant", kept.sha256, kept.bytes)
        assert (assistant.content, assistant.truncated) == (kept.text, kept.truncated)
    failed = build_record(
        chat_context("hi"), record_id=new_id(), started_at=record(0).time, policy=policy, answer=None,
        failure=Failure(502, "upstream_error", "down"),
    )  # fmt: skip
    assert failed.response == {"error": {"code": "upstream_error", "message": "down"}}
    assert [m.role for m in failed.messages] == ["user"]
