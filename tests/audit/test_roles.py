"""The documented least-privilege runtime role (INSERT and SELECT only) is enough to write and read."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.config.schema import Config
from tests.audit.conftest import execute, fetch, record


@pytest.fixture
def runtime_role(migrated: Config) -> Iterator[str]:
    assert migrated.database is not None
    role, schema = f"citadel_rt_{secrets.token_hex(4)}", migrated.database.db_schema
    execute(migrated, f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    execute(migrated, f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
    execute(migrated, f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
    try:
        yield role
    finally:
        execute(migrated, f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')
        execute(migrated, f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}')
        execute(migrated, f"DROP ROLE {role}")


async def test_runtime_role_writes_replays_and_cannot_tamper(
    migrated: Config, runtime_role: str, tmp_path: Path
) -> None:
    assert migrated.database is not None
    # migrate_on_start stays on: with every migration applied it needs no DDL privilege.
    db = msgspec.structs.replace(migrated.database, user=runtime_role)
    config = msgspec.structs.replace(migrated, database=db)
    try:
        with psycopg.connect(db.conninfo(), connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"this server does not let a new role log in without a password: {exc}")
    async with contextlib.AsyncExitStack() as stack:
        sink = await open_audit(config, stack, AuditOptions(spool_dir=str(tmp_path / "spool"), retry_s=0.1))
        conversation = "0190a8f8-0000-7000-8000-0000000000aa"
        for n in range(20):
            await sink.submit(record(n, conversation))
        await sink.close()
    assert sink.metrics.written == 20 and sink.metrics.lost == 0 and sink.metrics.spooled == 0
    assert fetch(config, "SELECT count(*) FROM audit_requests") == [(20,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        execute(config, "DELETE FROM audit_requests")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        execute(config, "UPDATE messages SET content = 'forged'")
