"""One oversize chat must not block a worker's audit trail: bounded records, dead-letter, a clean restart.

The incident: a 1,040,000-message chat (16.6 MB) was answered, but its INSERT outlasted write_timeout_s,
was cancelled and retried forever; every later record of that worker stayed spooled, also after a
restart. Here a 100,000-message chat (about 18 MB as one record, some 1.5 s to insert on this machine)
meets a write_timeout_s of 0.5 s.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.audit.deadletter import DEAD_LETTER
from citadel_proxy.audit.records import AuditMessage, AuditRecord, encode_record, new_id
from citadel_proxy.cli import main
from citadel_proxy.config.schema import Config
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.stages.audit import STAGE, AuditSettings
from tests.audit.conftest import chat_context, fetch, migrated, record, services, wait_for  # noqa: F401

MESSAGES = 100_000


def options(tmp_path: Path, **changes: object) -> AuditOptions:
    base = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.1, write_timeout_s=0.5, max_attempts=3)
    return msgspec.structs.replace(base, **changes)


def oversize_record() -> AuditRecord:
    """As a version without record bounds built it: every message, in the turn and in the request."""
    texts = [f"message number {n}" for n in range(MESSAGES)]
    return AuditRecord(
        id=new_id(), time=datetime.now(UTC), route="/v1/chat/completions", pipeline="chat", stream=False,
        model_requested="phi3", model="phi3:latest", key_name="team-a", duration_ms=1.0,
        request={"model": "phi3", "messages": [{"role": "user", "content": t} for t in texts]},
        messages=[AuditMessage(role="user", content=t, sha256="0" * 64, bytes=len(t)) for t in texts],
    )  # fmt: skip


def stored_ids(config: Config) -> set[str]:
    return {row[0] for row in fetch(config, "SELECT id::text FROM audit_requests")}


def cli_lines(tmp_path: Path, config_dir: Path) -> list[str]:
    config = config_dir / "citadel.yaml"
    config.write_text(f"database: null\naudit:\n  spool_dir: {tmp_path / 'spool'}\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["dead-letters", "--config", str(config)]) == 0
    return out.getvalue().splitlines()


async def test_an_oversize_chat_is_answered_bounded_and_stored(migrated: Config, tmp_path: Path) -> None:  # noqa: F811
    ctx: Context = chat_context(*(f"message number {n}" for n in range(MESSAGES)))
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
        stage = STAGE.build(AuditSettings(), services(sink))  # type: ignore[arg-type]

        async def answer(_ctx: Context) -> Reply:
            return Reply(completion=Completion(content="ok"))

        assert (await stage(ctx, answer)).completion is not None
        await sink.close()
    assert sink.metrics.dead_lettered == 0 and sink.metrics.lost == 0
    [(truncation, request_messages)] = fetch(
        migrated, "SELECT truncation, jsonb_array_length(request->'messages') FROM audit_requests"
    )
    assert truncation == {"messages_omitted": MESSAGES - 1000, "request_messages_omitted": MESSAGES - 1000}
    assert request_messages == 1000
    contents = [row[0] for row in fetch(migrated, "SELECT content FROM messages ORDER BY position")]
    # The turn's head and tail, then the answer.
    assert contents[:2] == ["message number 0", "message number 1"]
    assert contents[-2:] == [f"message number {MESSAGES - 1}", "ok"] and len(contents) == 1001


async def test_a_record_that_keeps_failing_is_set_aside_and_later_ones_flow(
    migrated: Config,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The incident's spool: the oversize record first, then the worker's later records behind it.
    big = oversize_record()
    later = [encode_record(record(n)) for n in range(20)]
    slot = tmp_path / "spool" / "slot-0"
    slot.mkdir(parents=True)
    (slot / "spool-0000000001.jsonl").write_bytes(b"\n".join([encode_record(big), *later]) + b"\n")

    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
        await wait_for(lambda: sink.metrics.replayed == len(later), timeout_s=60)
        await wait_for(lambda: not sink.database_failing)
        fresh = record(99)
        await sink.submit(fresh)
    assert stored_ids(migrated) == {msgspec.json.decode(r)["id"] for r in later} | {fresh.id}
    assert (sink.metrics.dead_lettered, sink.metrics.lost, sink.spool_waiting) == (1, 0, 0)
    [line] = (slot / DEAD_LETTER).read_bytes().splitlines()
    letter = msgspec.json.decode(line)
    assert (letter["id"], letter["attempts"]) == (big.id, 3)
    assert "write_timeout_s" in letter["reason"]
    assert msgspec.json.decode(msgspec.json.encode(letter["record"]), type=AuditRecord) == big
    lines = cli_lines(tmp_path, tmp_path)
    assert lines[0].startswith(big.id) and "3 attempts" in lines[0]
    assert lines[-1].startswith("1 dead-lettered audit records")

    # A restart does not try it again, nor get stuck: the spool is empty and new records go straight in.
    async with contextlib.AsyncExitStack() as stack:
        again = await open_audit(migrated, stack, options(tmp_path))
        assert not again.database_failing
        after = record(100)
        await again.submit(after)
    assert after.id in stored_ids(migrated) and big.id not in stored_ids(migrated)
    assert again.metrics.dead_lettered == 0 and len((slot / DEAD_LETTER).read_bytes().splitlines()) == 1


async def test_a_restart_goes_on_counting_the_attempts(migrated: Config, tmp_path: Path) -> None:  # noqa: F811
    """A worker killed after two failed writes of the record: the next start tries it once more, not 3."""
    big = oversize_record()
    behind = record(1)
    slot = tmp_path / "spool" / "slot-0"
    slot.mkdir(parents=True)
    (slot / "spool-0000000001.jsonl").write_bytes(encode_record(big) + b"\n" + encode_record(behind) + b"\n")
    (slot / "attempts.json").write_bytes(msgspec.json.encode({big.id: 2}))
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options(tmp_path))
        await wait_for(lambda: sink.metrics.dead_lettered == 1 and sink.metrics.replayed == 1, timeout_s=60)
    assert stored_ids(migrated) == {behind.id}
    assert msgspec.json.decode((slot / DEAD_LETTER).read_bytes())["attempts"] == 3
    assert not (slot / "attempts.json").exists()


async def test_a_burst_of_large_records_is_written_in_batches_cut_by_bytes(
    migrated: Config,  # noqa: F811
    tmp_path: Path,
) -> None:
    """32 records of 1 MB arrive at once: one 32 MB batch would outlast write_timeout_s and go to the
    spool; cut at max_batch_bytes, each batch is written in time, straight from the queue."""
    texts = [f"message number {n}" for n in range(40_000)]
    wide = [msgspec.structs.replace(record(n), request={"messages": texts}) for n in range(32)]
    assert all(len(encode_record(r)) > 700_000 for r in wide)
    opts = options(tmp_path, write_timeout_s=1.0, max_batch_bytes=2 * 1024 * 1024)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, opts)
        for one in wide:
            await sink.submit(one)
    assert stored_ids(migrated) == {r.id for r in wide}
    assert (sink.metrics.written, sink.metrics.spooled) == (32, 0)
