"""Operator commands: `migrate`, `backup`, `restore FILE` (PostgreSQL or the embedded SQLite store),
`dead-letters`."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import msgspec

from citadel_proxy.audit.backup import backup, restore
from citadel_proxy.audit.deadletter import dead_letters
from citadel_proxy.audit.errors import AuditError
from citadel_proxy.audit.migrate import migrate
from citadel_proxy.audit.service import spool_root
from citadel_proxy.audit.sqlite_backup import backup_sqlite, restore_sqlite
from citadel_proxy.audit.sqlite_file import connect, migrate_sqlite, sqlite_path
from citadel_proxy.config import ConfigError, load_config
from citadel_proxy.config.schema import Config

_CONFIG_HELP = "config file (default: $CITADEL_CONFIG or conf/citadel.yaml)"


def register(subparsers: Any) -> None:
    # default=SUPPRESS: never override a --config the main parser may have read already.
    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("--config", default=argparse.SUPPRESS, help=_CONFIG_HELP)
        return parser

    add("migrate", "apply the audit schema's missing migrations").set_defaults(func=_migrate)
    dump = add("backup", "back up the audit store (pg_dump, or SQLite's backup API) into paths.backups")
    dump.add_argument("--keep-days", type=float, default=30.0, help="drop backups older than this")
    dump.add_argument("--keep-count", type=int, default=30, help="keep at most this many backups")
    dump.set_defaults(func=_backup)
    load = add("restore", "restore a backup into the configured audit store (replaces its content)")
    load.add_argument("file", type=Path, help="a backup file written by `citadel-proxy backup`")
    load.set_defaults(func=_restore)
    letters = add("dead-letters", "list the audit records set aside after failing audit.max_attempts times")
    letters.add_argument("--json", action="store_true", help="one JSON line per record, the record included")
    letters.set_defaults(func=_dead_letters)


def _config(args: argparse.Namespace) -> Config:
    from citadel_proxy.config import config_path

    return load_config(config_path(getattr(args, "config", None)))


def _guarded(action: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            message = action(args)
        except (AuditError, ConfigError) as exc:
            sys.stderr.write(f"citadel-proxy {getattr(args, 'command', 'audit')}: {exc}\n")
            return 1
        sys.stdout.write(message + "\n")
        return 0

    return run


@_guarded
def _migrate(args: argparse.Namespace) -> str:
    import psycopg

    config = _config(args)
    db = config.database
    try:
        if db is None:
            with contextlib.closing(connect(sqlite_path(config), timeout_s=30.0)) as conn:
                applied = migrate_sqlite(conn)
        else:
            applied = migrate(db.conninfo(), db.db_schema)
    except (psycopg.Error, sqlite3.Error) as exc:
        raise AuditError(f"migrations failed: {exc}") from exc
    return f"applied migrations: {applied}" if applied else "the schema is up to date"


@_guarded
def _backup(args: argparse.Namespace) -> str:
    config = _config(args)
    directory, keep = Path(config.paths.backups), {"keep_days": args.keep_days, "keep_count": args.keep_count}
    if config.database is None:
        entry = backup_sqlite(sqlite_path(config), directory, **keep)
    else:
        entry = backup(config.database, directory, **keep)
    return f"{directory / entry.file}: {entry.bytes} bytes, sha256 {entry.sha256}"


@_guarded
def _restore(args: argparse.Namespace) -> str:
    config = _config(args)
    db = config.database
    if db is None:
        restore_sqlite(sqlite_path(config), args.file)
        return f"restored {args.file} into {sqlite_path(config)}"
    restore(db, args.file)
    return f"restored {args.file} into {db.database} (schema {db.db_schema})"


@_guarded
def _dead_letters(args: argparse.Namespace) -> str:
    root = spool_root(_config(args))
    found = dead_letters(root)
    if args.json:
        return "\n".join(msgspec.json.encode(letter).decode() for _, letter in found)
    lines = [
        f"{letter.id}  {letter.set_aside_at:%Y-%m-%dT%H:%M:%SZ}  {letter.attempts} attempts  "
        f"{letter.bytes} bytes  {file}  {letter.reason}"
        for file, letter in found
    ]
    return "\n".join([*lines, f"{len(found)} dead-lettered audit records under {root}"])
