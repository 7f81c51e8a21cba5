"""`citadel-proxy backup` and `restore` of the embedded SQLite store, through SQLite's online backup API.

The backup is a consistent copy taken while the gateway keeps writing; the restore replaces the live
file's content in one transaction, and a running gateway reads and writes the restored content at once.
Backups share the directory, manifest (sha256) and rotation of the PostgreSQL dumps.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from citadel_proxy.audit.backup import BackupEntry, add_to_manifest, read_manifest, sha256_of
from citadel_proxy.audit.errors import AuditError
from citadel_proxy.audit.sqlite_file import connect

FORMAT = "sqlite"
_TIMEOUT_S = 30.0


def backup_sqlite(
    source: Path, directory: Path, *, keep_days: float, keep_count: int, now: datetime | None = None
) -> BackupEntry:
    """Copy the store; then drop backups older than keep_days beyond the newest keep_count."""
    if not source.is_file():
        raise AuditError(f"{source}: no audit store to back up (the gateway creates it when it starts)")
    now = now or datetime.now(UTC)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"citadel-audit-{now:%Y%m%dT%H%M%S%fZ}.sqlite3"
    target, partial = directory / name, directory / (name + ".partial")
    try:
        with (
            contextlib.closing(connect(source, _TIMEOUT_S)) as src,
            contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as dst,
        ):
            src.backup(dst)
            # One self-contained file (no -wal beside it), so its sha256 stays what the manifest says.
            dst.execute("PRAGMA journal_mode = DELETE")
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise AuditError(f"backup of {source} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return add_to_manifest(
        directory, target, now, keep_days, keep_count, database=source.name, schema="main", format=FORMAT
    )


def restore_sqlite(target: Path, file: Path) -> None:
    """Replace the store's content with a backup's, while the gateway may be running."""
    if not file.is_file():
        raise AuditError(f"{file}: no such backup file")
    listed = next((e for e in read_manifest(file.parent).backups if e.file == file.name), None)
    if listed is not None:
        if listed.format != FORMAT:
            raise AuditError(
                f"{file.name} is a PostgreSQL dump; the config has no database to restore it into"
            )
        if sha256_of(file) != listed.sha256:
            raise AuditError(f"{file.name} does not match the sha256 in its manifest: the file is damaged")
    try:
        with contextlib.closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)) as src:
            if src.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise AuditError(f"{file.name} is not a sound SQLite database")
            with contextlib.closing(connect(target, _TIMEOUT_S)) as dst:
                src.backup(dst)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"restore of {file} failed: {exc}") from exc
