"""PostgreSQL unreachable or slow: records go to the spool, come back in order, each exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace

import msgspec

from citadel_proxy.audit import AuditOptions, AuditSink, open_audit
from citadel_proxy.config.schema import Config
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.routes.health import check_audit
from citadel_proxy.stages.audit import STAGE, AuditSettings
from tests.audit.conftest import TcpProxy, chat_context, fetch, record, services, wait_for


def through(proxy: TcpProxy, migrated: Config) -> Config:
    assert migrated.database is not None
    return msgspec.structs.replace(
        migrated, database=msgspec.structs.replace(migrated.database, port=proxy.port)
    )


async def burst(sink: object, count: int, tag: str) -> list[Context]:
    stage = STAGE.build(AuditSettings(), services(sink))  # type: ignore[arg-type]
    contexts = [chat_context(f"{tag} {n}") for n in range(count)]

    async def inner(ctx: Context) -> Reply:
        return Reply(completion=Completion(content="ok"))

    await asyncio.gather(*(stage(ctx, inner) for ctx in contexts))
    return contexts


def outage_options(tmp_path: Path) -> AuditOptions:
    return AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2, write_timeout_s=1.0)


async def submit_while_cut(proxy: TcpProxy, sink: AuditSink, count: int) -> None:
    await proxy.cut()
    for n in range(count):
        await sink.submit(record(n))


def stored(config: Config) -> tuple[int, int]:
    [(total, distinct)] = fetch(config, "SELECT count(*), count(DISTINCT id) FROM audit_requests")
    return total, distinct


async def test_outage_during_burst_then_back(proxy: TcpProxy, migrated: Config, tmp_path: Path) -> None:
    config = through(proxy, migrated)
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2, write_timeout_s=2.0, batch_size=50)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, opts)
        await burst(sink, 100, "before")
        await wait_for(lambda: sink.metrics.written == 100)
        await proxy.cut()
        during = await burst(sink, 400, "during")
        await wait_for(lambda: sink.metrics.written + sink.metrics.spooled >= 500)
        assert sink.metrics.spooled > 0 and sink.metrics.lost == 0 and sink.queue_depth == 0
        await proxy.restore()
        await wait_for(lambda: stored(migrated) == (500, 500), timeout_s=60)
        await burst(sink, 50, "after")
        await wait_for(lambda: stored(migrated) == (550, 550), timeout_s=30)
    assert sink.metrics.lost == 0 and sink.metrics.rejected == 0
    assert not list((tmp_path / "spool").rglob("spool-*.jsonl"))
    ids = {row[0] for row in fetch(migrated, "SELECT id::text FROM audit_requests")}
    assert {ctx.conversation_id for ctx in during} <= {
        row[0] for row in fetch(migrated, "SELECT conversation_id::text FROM audit_requests")
    }
    assert len(ids) == 550


async def test_full_queue_overflows_to_spool(migrated: Config, tmp_path: Path) -> None:
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), queue_size=5, batch_size=5, retry_s=0.1)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, opts)
        await asyncio.gather(*(sink.submit(record(n)) for n in range(300)))
        assert sink.metrics.spooled > 0
        await wait_for(lambda: stored(migrated) == (300, 300))
    assert sink.metrics.lost == 0
    assert sink.metrics.written + sink.metrics.spooled == 300


async def test_shutdown_drains_queue(migrated: Config, tmp_path: Path) -> None:
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), batch_size=10)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, opts)
        for n in range(200):
            await sink.submit(record(n))
    assert stored(migrated) == (200, 200) and sink.queue_depth == 0


async def test_shutdown_while_down_spools_then_next_start_replays(
    proxy: TcpProxy, migrated: Config, tmp_path: Path
) -> None:
    config = through(proxy, migrated)
    opts = outage_options(tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, opts)
        await submit_while_cut(proxy, sink, 30)
    assert sink.metrics.lost == 0 and stored(migrated) == (0, 0)
    assert list((tmp_path / "spool").rglob("spool-*.jsonl"))
    await proxy.restore()
    async with contextlib.AsyncExitStack() as stack:
        again = await open_audit(config, stack, opts)
        await wait_for(lambda: stored(migrated) == (30, 30))
    assert again.metrics.replayed == 30


async def test_a_spool_line_of_an_older_version_is_replayed_with_the_fields_added_since(
    migrated: Config, tmp_path: Path
) -> None:
    old = msgspec.to_builtins(record(1))
    for added_later in ("cache_hit", "content_mode", "ttft_ms", "error_code"):  # fields with defaults
        del old[added_later]
    slot = tmp_path / "spool" / "slot-0"
    slot.mkdir(parents=True)
    (slot / "spool-0000000001.jsonl").write_bytes(msgspec.json.encode(old) + b"\n")
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, opts)
        await wait_for(lambda: stored(migrated) == (1, 1))
    assert sink.metrics.replayed == 1 and sink.metrics.rejected == 0
    assert fetch(migrated, "SELECT content_mode, cache_hit FROM audit_requests") == [("full", False)]


async def test_a_backlog_while_postgresql_is_down_is_a_degraded_audit(
    proxy: TcpProxy, migrated: Config, tmp_path: Path
) -> None:
    config = through(proxy, migrated)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, outage_options(tmp_path))
        await submit_while_cut(proxy, sink, 3)
        await wait_for(lambda: sink.spool_waiting == 3)
        assert check_audit(SimpleNamespace(audit=sink)).status == "degraded"  # type: ignore[arg-type]
        await proxy.restore()
        await wait_for(lambda: stored(migrated) == (3, 3))
        # Healthy again once the spool is empty (the segment is removed after its records are stored).
        await wait_for(lambda: check_audit(SimpleNamespace(audit=sink)).status == "ok")  # type: ignore[arg-type]
