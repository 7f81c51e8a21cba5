"""A PostgreSQL restart between two batches: the next batch is written, not sent to the spool."""

from __future__ import annotations

import contextlib
from pathlib import Path

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.config.schema import Config
from tests.audit.conftest import TcpProxy, record, wait_for
from tests.audit.test_outage import through


async def test_a_connection_broken_by_a_restart_is_replaced_not_used(
    proxy: TcpProxy, migrated: Config, tmp_path: Path
) -> None:
    options = AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.2, write_timeout_s=2.0)
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(through(proxy, migrated), stack, options)
        await sink.submit(record(1))
        await wait_for(lambda: sink.metrics.written == 1)
        await proxy.cut()  # the pooled connection dies; PostgreSQL is back before the next batch
        await proxy.restore()
        await sink.submit(record(2))
        await wait_for(lambda: sink.metrics.written == 2)
    assert sink.metrics.spooled == 0 and sink.metrics.lost == 0
