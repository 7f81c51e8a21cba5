"""Migrations: an empty schema gets them all, an older one only the missing ones, none runs twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citadel_proxy.audit import migrate as migrations
from citadel_proxy.audit.errors import AuditError
from citadel_proxy.config.schema import Config
from tests.audit.conftest import execute, fetch, make_config

LATEST = migrations.available()[-1].version


def tables(config: Config) -> set[str]:
    rows = fetch(config, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


def test_shipped_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2


def test_empty_schema(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    conninfo = config.database.conninfo()
    assert migrations.applied_versions(conninfo, pg_schema) == []
    assert migrations.migrate(conninfo, pg_schema) == list(range(1, LATEST + 1))
    assert {"conversations", "audit_requests", "messages", "llm_metadata", "schema_migrations"} <= tables(
        config
    )
    assert migrations.migrate(conninfo, pg_schema) == []


def test_older_schema_gets_only_the_missing(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    conninfo = config.database.conninfo()
    assert migrations.migrate(conninfo, pg_schema, target=1) == [1]
    assert "llm_metadata" not in tables(config)
    execute(config, "INSERT INTO conversations VALUES (gen_random_uuid(), now(), 'k', 'm')")
    assert migrations.migrate(conninfo, pg_schema) == list(range(2, LATEST + 1))
    assert migrations.applied_versions(conninfo, pg_schema) == list(range(1, LATEST + 1))
    assert fetch(config, "SELECT count(*) FROM conversations") == [(1,)]
    assert "llm_metadata" in tables(config)


def test_edited_migration_is_refused(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    migrations.migrate(config.database.conninfo(), pg_schema)
    execute(config, "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1")
    with pytest.raises(AuditError, match="changed after it was applied"):
        migrations.migrate(config.database.conninfo(), pg_schema)


def test_cli_migrate(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    db = config.database
    path = tmp_path / "citadel.yaml"
    path.write_text(
        f"database:\n  host: {db.host}\n  port: {db.port}\n  database: {db.database}\n  user: {db.user}\n"
        f"  schema: {pg_schema}\n  ssl_mode: disable\n"
    )
    run = [sys.executable, "-c", _CLI, "migrate", "--config", str(path)]
    first = subprocess.run(run, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert f"applied migrations: {list(range(1, LATEST + 1))}" in first.stdout
    again = subprocess.run(run, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "up to date" in again.stdout


# The audit CLI on its own parser, as the main CLI will register it.
_CLI = """
import argparse, sys
from citadel_proxy.audit.cli import register
parser = argparse.ArgumentParser()
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args()
sys.exit(args.func(args))
"""
