"""`citadel-proxy backup` and `restore`: pg_dump custom-format files of the audit schema, with a manifest.

The password never appears on a command line (where `ps` shows it): it goes to pg_dump through the
environment, or better, comes from the operator's ~/.pgpass or PGPASSFILE.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from psycopg.conninfo import make_conninfo

from citadel_proxy.audit.errors import AuditError
from citadel_proxy.config.schema import Database

MANIFEST = "manifest.json"


class BackupEntry(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    created_at: datetime
    bytes: int
    sha256: str
    database: str
    schema: str
    format: str = "custom"


class Manifest(msgspec.Struct, kw_only=True):
    backups: list[BackupEntry] = msgspec.field(default_factory=list)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AuditError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return path


def _connection(db: Database) -> tuple[str, dict[str, str]]:
    conninfo = make_conninfo(
        host=db.host, port=db.port, dbname=db.database, user=db.user, sslmode=db.ssl_mode
    )
    env = dict(os.environ)
    if db.password is not None:
        env["PGPASSWORD"] = db.password
    return conninfo, env


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AuditError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.exists():
        return Manifest()
    return msgspec.json.decode(path.read_bytes(), type=Manifest)


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    os.replace(tmp, directory / MANIFEST)


def backup(
    db: Database, directory: Path, *, keep_days: float, keep_count: int, now: datetime | None = None
) -> BackupEntry:
    """Dump the audit schema; then drop backups older than keep_days beyond the newest keep_count."""
    now = now or datetime.now(UTC)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"citadel-{db.database}-{db.db_schema}-{now:%Y%m%dT%H%M%S%fZ}.dump"
    target, partial = directory / name, directory / (name + ".partial")
    conninfo, env = _connection(db)
    command = [
        _tool("pg_dump"),
        "--format=custom",
        f"--schema={db.db_schema}",
        f"--file={partial}",
        f"--dbname={conninfo}",
    ]
    try:
        _run(command, env)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return add_to_manifest(
        directory, target, now, keep_days, keep_count, database=db.database, schema=db.db_schema
    )


def add_to_manifest(
    directory: Path,
    target: Path,
    now: datetime,
    keep_days: float,
    keep_count: int,
    *,
    database: str,
    schema: str,
    format: str = "custom",
) -> BackupEntry:
    """List a finished backup file in the manifest (size, sha256) and rotate the old ones out."""
    entry = BackupEntry(
        file=target.name,
        created_at=now,
        bytes=target.stat().st_size,
        sha256=sha256_of(target),
        database=database,
        schema=schema,
        format=format,
    )
    manifest = read_manifest(directory)
    manifest.backups.append(entry)
    manifest.backups = _rotate(directory, manifest.backups, now, keep_days, keep_count)
    _write_manifest(directory, manifest)
    return entry


def _rotate(
    directory: Path, entries: list[BackupEntry], now: datetime, keep_days: float, keep_count: int
) -> list[BackupEntry]:
    newest_first = sorted(entries, key=lambda e: e.created_at, reverse=True)
    cutoff = now - timedelta(days=keep_days)
    kept = [e for i, e in enumerate(newest_first) if i == 0 or (i < keep_count and e.created_at >= cutoff)]
    for entry in newest_first:
        if entry not in kept:
            (directory / entry.file).unlink(missing_ok=True)
    return sorted(kept, key=lambda e: e.created_at)


def restore(db: Database, file: Path) -> None:
    """Restore a backup into the configured database; its objects are replaced (--clean)."""
    if not file.is_file():
        raise AuditError(f"{file}: no such backup file")
    listed = next((e for e in read_manifest(file.parent).backups if e.file == file.name), None)
    if listed is not None:
        if listed.schema != db.db_schema:
            raise AuditError(f"{file.name} holds schema {listed.schema!r}, the config names {db.db_schema!r}")
        if sha256_of(file) != listed.sha256:
            raise AuditError(f"{file.name} does not match the sha256 in its manifest: the file is damaged")
    conninfo, env = _connection(db)
    _run(
        [
            _tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={conninfo}",
            str(file),
        ],
        env,
    )
