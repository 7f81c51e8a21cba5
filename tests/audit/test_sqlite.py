"""The embedded SQLite store behind the writer: the spool covers it as it covers PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.audit.records import encode_record
from citadel_proxy.audit.sqlite_file import sqlite_migrations, sqlite_path
from citadel_proxy.cli import main
from citadel_proxy.config import load_config
from citadel_proxy.routes.health import check_audit
from tests.audit.conftest import fetch_any, make_config, record, services, wait_for


def stored(tmp_path: Path) -> tuple[int, int]:
    config = make_config(None, "", tmp_path)
    [(total, distinct)] = fetch_any(config, "SELECT count(*), count(DISTINCT id) FROM audit_requests")
    return total, distinct


async def test_a_locked_file_spools_then_catches_up(tmp_path: Path) -> None:
    """Another process holding the write lock past write_timeout_s: records wait in the spool."""
    config = make_config(None, "", tmp_path)
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.1, write_timeout_s=0.3, linger_s=0)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, opts)
        with contextlib.closing(sqlite3.connect(sqlite_path(config), isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            for n in range(20):
                await sink.submit(record(n))
            await wait_for(lambda: sink.metrics.spooled > 0 and sink.queue_depth == 0)
            assert sink.metrics.lost == 0 and check_audit(services(sink)).status == "degraded"
            other.execute("ROLLBACK")
        await wait_for(lambda: stored(tmp_path) == (20, 20))
        await wait_for(lambda: check_audit(services(sink)).status == "ok")
    assert sink.metrics.written + sink.metrics.replayed == 20 and sink.metrics.rejected == 0
    assert not list((tmp_path / "spool").rglob("spool-*.jsonl"))


async def test_durability_spool_moves_records_into_sqlite(tmp_path: Path) -> None:
    config = make_config(None, "", tmp_path)
    # retry_s also bounds the last move at close (5 x): room for a loaded machine.
    opts = AuditOptions(spool_dir=str(tmp_path / "spool"), durability="spool", retry_s=0.5)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, opts)
        for n in range(5):
            await sink.submit(record(n))
        assert sink.metrics.spooled == 5  # on disk before submit returned
        await wait_for(lambda: stored(tmp_path) == (5, 5))
    assert not list((tmp_path / "spool").rglob("spool-*.jsonl"))


async def test_the_json_lines_log_of_earlier_versions_moves_into_sqlite(tmp_path: Path) -> None:
    config = make_config(None, "", tmp_path)
    slot = tmp_path / "data" / "audit" / "slot-3"
    slot.mkdir(parents=True)
    old = [record(n, "0190a8f8-0000-7000-8000-000000000001") for n in range(3)]
    lines = b"".join(encode_record(r) + b"\n" for r in old) + b'{"id": "torn'
    (slot / "audit-0000000001.jsonl").write_bytes(lines)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack)
        assert sink.queries is not None
        page = await sink.queries.conversations(
            model=None, key=None, since=None, until=None, limit=10, cursor=None
        )
    assert [(c.id, c.requests) for c in page.data] == [("0190a8f8-0000-7000-8000-000000000001", 3)]
    assert not (slot / "audit-0000000001.jsonl").exists()
    assert (slot / "rejected.jsonl").read_bytes() == b'{"id": "torn\n'


def test_migrate_command_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "citadel.yaml"
    config_file.write_text(f"database: null\naudit: {{sqlite_path: {tmp_path}/elsewhere/audit.db}}\n")
    assert main(["migrate", "--config", str(config_file)]) == 0
    assert main(["migrate", "--config", str(config_file)]) == 0
    versions = [version for version, _ in sqlite_migrations()]
    assert capsys.readouterr().out.splitlines() == [
        f"applied migrations: {versions}",
        "the schema is up to date",
    ]
    assert fetch_any(load_config(config_file), "SELECT count(*) FROM audit_requests") == [(0,)]


async def test_two_workers_write_the_one_file(tmp_path: Path) -> None:
    """Each worker has its own connections (and spool slot): their batches take turns on the lock."""
    config = make_config(None, "", tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        sinks = [await open_audit(config, stack, AuditOptions(batch_size=20)) for _ in range(2)]
        await asyncio.gather(*(sink.submit(record(n)) for n in range(300) for sink in sinks))
    assert stored(tmp_path) == (600, 600)
    assert all(s.metrics.written == 300 and s.metrics.spooled == 0 for s in sinks)
