"""durability: spool — a record whose submit returned survives SIGKILL even while PostgreSQL is healthy."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

from citadel_proxy.audit.service import open_audit
from citadel_proxy.config.schema import AuditOptions, Config
from citadel_proxy.routes.health import check_audit
from tests.audit.conftest import fetch, record, wait_for
from tests.audit.test_crash import spool_in_child


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
    # Some records are in PostgreSQL when the child dies, the rest only spooled: none may be lost.
    ids = await spool_in_child(migrated, spool, 200, tmp_path, durability="spool")
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(spool), retry_s=0.1))
        await wait_for(lambda: fetch(migrated, "SELECT count(*) FROM audit_requests") == [(200,)])
    rows = fetch(migrated, "SELECT id::text, count(*) FROM audit_requests GROUP BY id")
    assert sorted(r[0] for r in rows) == sorted(ids) and {r[1] for r in rows} == {1}
    assert sink.metrics.lost == 0


async def test_records_passing_through_the_spool_are_not_a_degraded_audit(
    migrated: Config, tmp_path: Path
) -> None:
    options = AuditOptions(spool_dir=str(tmp_path / "spool"), durability="spool", linger_s=1.0)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, options)
        for n in range(5):
            await sink.submit(record(n))
        assert sink.spool_waiting == 5  # on their way, within linger_s
        assert check_audit(SimpleNamespace(audit=sink)).status == "ok"  # type: ignore[arg-type]
