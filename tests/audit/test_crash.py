"""A gateway killed with SIGKILL while records are spooled: after restart, each is stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import msgspec

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.config.schema import Config
from tests.audit.conftest import fetch, wait_for

SCRIPT = Path(__file__).with_name("spool_writer.py")
REPO = str(Path(__file__).resolve().parents[2])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spool_in_child(
    config: Config, spool: Path, count: int, tmp_path: Path, durability: str = "queue"
) -> list[str]:
    """Records submitted by a child process, which is then SIGKILLed. With the default durability the
    child's database is unreachable, so every record went to the spool."""
    assert config.database is not None
    if durability == "queue":
        unreachable = msgspec.structs.replace(config.database, port=closed_port())
        config = msgspec.structs.replace(config, database=unreachable)
    config_file = tmp_path / "child-config.json"
    config_file.write_bytes(msgspec.json.encode(config))
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(config_file), str(spool), str(count), durability,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": REPO},
    )  # fmt: skip
    assert child.stdout is not None
    ids = []
    async with asyncio.timeout(60):
        while (line := (await child.stdout.readline()).decode().strip()) != "spooled":
            assert line, "the child died before spooling everything"
            ids.append(line)
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL
    return ids


async def test_sigkill_with_spooled_records_then_restart(migrated: Config, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ids = await spool_in_child(migrated, spool, 250, tmp_path)
    assert len(ids) == 250 and list(spool.rglob("spool-*.jsonl"))
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(spool), retry_s=0.1))
        await wait_for(lambda: fetch(migrated, "SELECT count(*) FROM audit_requests") == [(250,)])
    assert sink.metrics.lost == 0 and sink.metrics.replayed == 250
    rows = fetch(migrated, "SELECT id::text, count(*) FROM audit_requests GROUP BY id")
    assert sorted(r[0] for r in rows) == sorted(ids) and {r[1] for r in rows} == {1}
    assert not list(spool.rglob("spool-*.jsonl"))


async def test_crash_between_store_and_segment_removal(migrated: Config, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ids = await spool_in_child(migrated, spool, 120, tmp_path)
    saved = {path: path.read_bytes() for path in spool.rglob("spool-*.jsonl")}
    async with contextlib.AsyncExitStack() as stack:
        await open_audit(migrated, stack, AuditOptions(spool_dir=str(spool), retry_s=0.1, batch_size=40))
        await wait_for(lambda: not list(spool.rglob("spool-*.jsonl")))
    # As if killed after the rows were stored but before the segment was removed, mid-way through a
    # write of one more line (torn by the crash, never acknowledged).
    for path, data in saved.items():
        path.write_bytes(data + b'{"id":"0190')
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(spool), retry_s=0.1))
        await wait_for(lambda: not list(spool.rglob("spool-*.jsonl")))
    assert fetch(migrated, "SELECT count(*), count(DISTINCT id) FROM audit_requests") == [(120, 120)]
    assert {r[0] for r in fetch(migrated, "SELECT id::text FROM audit_requests")} == set(ids)
    assert sink.metrics.rejected == len(saved) and sink.metrics.lost == 0
    assert (next(iter(saved)).parent / "rejected.jsonl").read_bytes().startswith(b'{"id":"0190')
