"""Backup and restore: pg_dump of the audit schema, drop it, restore, every record is back."""

from __future__ import annotations

import contextlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citadel_proxy.audit import open_audit
from citadel_proxy.audit.backup import backup, read_manifest, restore, sha256_of
from citadel_proxy.audit.errors import AuditError
from citadel_proxy.audit.migrate import available
from citadel_proxy.audit.service import AuditOptions
from citadel_proxy.config.schema import Config
from tests.audit.conftest import execute, fetch, record


@pytest.fixture
def pg_tools() -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("pg_dump/pg_restore missing: CI must run the backup tests", pytrace=False)
        pytest.skip("pg_dump/pg_restore are not installed")


async def test_backup_drop_restore(pg_tools: None, migrated: Config, tmp_path: Path) -> None:
    assert migrated.database is not None
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(tmp_path / "spool")))
        for n in range(50):
            await sink.submit(
                record(n, conversation="0190a8f8-0000-7000-8000-000000000001" if n % 2 else None)
            )
    before = fetch(migrated, "SELECT id, request, created_at FROM audit_requests ORDER BY id")
    assert len(before) == 50
    directory = tmp_path / "backups"
    entry = backup(migrated.database, directory, keep_days=30, keep_count=5)
    dump = directory / entry.file
    assert entry.sha256 == sha256_of(dump) and entry.bytes == dump.stat().st_size > 0
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    schema = migrated.database.db_schema
    execute(migrated, f'DROP SCHEMA "{schema}" CASCADE')
    restore(migrated.database, dump)
    assert fetch(migrated, "SELECT id, request, created_at FROM audit_requests ORDER BY id") == before
    assert fetch(migrated, "SELECT count(*) FROM messages") == [(50,)]
    assert fetch(migrated, "SELECT max(version) FROM schema_migrations") == [(available()[-1].version,)]
    # Restoring over a live schema replaces it (--clean), still with every record.
    restore(migrated.database, dump)
    assert len(fetch(migrated, "SELECT id FROM audit_requests")) == 50


async def test_damaged_backup_is_refused(pg_tools: None, migrated: Config, tmp_path: Path) -> None:
    assert migrated.database is not None
    entry = backup(migrated.database, tmp_path / "backups", keep_days=30, keep_count=5)
    dump = tmp_path / "backups" / entry.file
    dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(AuditError, match="damaged"):
        restore(migrated.database, dump)


def test_rotation_by_age_and_count(pg_tools: None, migrated: Config, tmp_path: Path) -> None:
    assert migrated.database is not None
    directory = tmp_path / "backups"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        backup(migrated.database, directory, keep_days=10, keep_count=3, now=start + timedelta(days=d))
        for d in (0, 1, 2, 3, 4, 30)
    ]
    manifest = read_manifest(directory)
    # Day 30: days 0-4 are older than 10 days; the newest always stays.
    assert [e.file for e in manifest.backups] == [made[-1].file]
    assert sorted(p.name for p in directory.glob("*.dump")) == [made[-1].file]
    more = [
        backup(migrated.database, directory, keep_days=100, keep_count=3, now=start + timedelta(days=31 + d))
        for d in range(4)
    ]
    assert [e.file for e in read_manifest(directory).backups] == [m.file for m in more[-3:]]
