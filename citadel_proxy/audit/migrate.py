"""Versioned SQL migrations (`migrations/NNNN_name.sql`), each applied once, in its own transaction."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from citadel_proxy.audit.errors import AuditError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in resources.files("citadel_proxy.audit").joinpath("migrations").iterdir():
        if match := _NAME.match(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def migrate(conninfo: str, schema: str, *, target: int | None = None) -> list[int]:
    """Apply the missing migrations up to `target` (all by default); returns the versions applied."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _enter_schema(conn, schema)
        # Two gateways starting at once must not both apply the same migration.
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"citadel-migrate:{schema}",))
        # Created only when missing: an up-to-date schema needs no DDL privilege (a runtime role may start).
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            conn.execute(
                "CREATE TABLE schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
        applied: dict[int, str] = {int(v): str(s) for v, s in rows}
        done = []
        for migration in available():
            if target is not None and migration.version > target:
                break
            if migration.version in applied:
                _check_unchanged(migration, applied[migration.version])
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.sha256),
                )
            log.info("applied migration %04d_%s to schema %s", migration.version, migration.name, schema)
            done.append(migration.version)
        return done


def applied_versions(conninfo: str, schema: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _enter_schema(conn, schema, create=False)
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return []
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _enter_schema(conn: psycopg.Connection[tuple[object, ...]], schema: str, *, create: bool = True) -> None:
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if exists is None and create:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


def _check_unchanged(migration: Migration, recorded: str) -> None:
    if recorded != migration.sha256:
        raise AuditError(
            f"migration {migration.version:04d}_{migration.name} was changed after it was applied "
            "(its checksum differs); add a new migration instead of editing an applied one"
        )
