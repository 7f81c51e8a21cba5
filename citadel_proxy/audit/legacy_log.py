"""The JSON-lines audit log that earlier versions kept without a database, moved into the SQLite store.

Those versions wrote `<spool root>/slot-N/audit-*.jsonl` as the audit log itself; the store now holds
the trail, so at start each such file is inserted (idempotently: a second worker doing the same, or a
move cut short, stores nothing twice) and then removed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from citadel_proxy.audit.errors import StoreRejected
from citadel_proxy.audit.ports import AuditStore
from citadel_proxy.audit.spool import quarantine, read_segment

log = logging.getLogger(__name__)


def _legacy_files(root: Path) -> list[Path]:
    return sorted(root.glob("slot-*/audit-*.jsonl"))


async def import_audit_log(store: AuditStore, root: Path, batch_size: int) -> int:
    """Move every old audit-log file under `root` into `store`; returns how many records were moved."""
    moved = 0
    for path in await asyncio.to_thread(_legacy_files, root):
        try:
            segment = await asyncio.to_thread(read_segment, path)
        except OSError as exc:
            # Left where it is for a human: an old log must not keep the gateway from starting.
            log.error("cannot read the old audit log %s, left as it is: %s", path, exc)
            continue
        refused: list[bytes] = []
        for start in range(0, len(segment.records), batch_size):
            refused += await _insert(store, segment.records[start : start + batch_size])
        await asyncio.to_thread(quarantine, path.parent, segment.bad_lines + refused)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        moved += len(segment.records) - len(refused)
        log.info("moved %s of the JSON-lines audit log into the SQLite store", path)
    return moved


async def _insert(store: AuditStore, records: list[bytes]) -> list[bytes]:
    """Store the records; returns those refused for what they hold (kept aside, as the writer does)."""
    try:
        await store.insert(records)
        return []
    except StoreRejected:
        refused = []
        for record in records:
            try:
                await store.insert([record])
            except StoreRejected:
                refused.append(record)
        return refused
