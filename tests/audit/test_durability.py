"""durability: spool — a record whose submit returned survives SIGKILL even while PostgreSQL is healthy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import msgspec

from citadel_proxy.audit.options import AuditOptions
from citadel_proxy.audit.service import open_audit
from citadel_proxy.config.schema import Config
from tests.audit.conftest import fetch, record, wait_for

SCRIPT = Path(__file__).with_name("durable_writer.py")
REPO = str(Path(__file__).resolve().parents[2])


async def test_spool_first_records_reach_postgresql_without_a_restart(
    migrated: Config, tmp_path: Path
) -> None:
    options = AuditOptions(spool_dir=str(tmp_path / "spool"), durability="spool", linger_s=0.01)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options)
        for n in range(60):
            await sink.submit(record(n))
        await wait_for(lambda: fetch(migrated, "SELECT count(*) FROM audit_requests") == [(60,)])
    assert sink.metrics.lost == 0 and not list((tmp_path / "spool").rglob("spool-*.jsonl"))


async def test_sigkill_right_after_submit_with_a_healthy_database(migrated: Config, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    config_file = tmp_path / "child-config.json"
    config_file.write_bytes(msgspec.json.encode(migrated))
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(config_file), str(spool), "200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": REPO},
    )  # fmt: skip
    assert child.stdout is not None
    ids = []
    async with asyncio.timeout(60):
        while (line := (await child.stdout.readline()).decode().strip()) != "submitted":
            assert line, "the child died before submitting everything"
            ids.append(line)
    child.send_signal(signal.SIGKILL)  # some records are in PostgreSQL already, the rest only spooled
    assert await child.wait() == -signal.SIGKILL
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(spool), retry_s=0.1))
        await wait_for(lambda: fetch(migrated, "SELECT count(*) FROM audit_requests") == [(200,)])
    rows = fetch(migrated, "SELECT id::text, count(*) FROM audit_requests GROUP BY id")
    assert sorted(r[0] for r in rows) == sorted(ids) and {r[1] for r in rows} == {1}
    assert sink.metrics.lost == 0
