"""What the `uv-full` target needs beside the gateway: a fresh PostgreSQL schema, a Redis prefix, a key.

Both are removed when the bench ends (DROP SCHEMA ... CASCADE; the keys under the prefix deleted). The
schema is migrated here, before the gateway starts, so that autovacuum is off on the audit tables for the
run: a vacuum of the tables the gateway writes, started by the server at any moment, would take cores
from the gateway in one uv-full run and not the next (the setting goes with the schema).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bench.procs import GatewaySpec, bare_pipelines, full_pipelines

if TYPE_CHECKING:
    from pathlib import Path

    import redis

PG_PORT = 5432
PG_DSN = f"host=127.0.0.1 port={PG_PORT} user=postgres dbname=test sslmode=disable connect_timeout=3"
REDIS = ("127.0.0.1", 6379)
# The tables every audited request writes to.
AUDIT_TABLES = ("conversations", "audit_requests", "messages", "audit_refusals")


@dataclass(frozen=True)
class Full:
    """The config sections of the full gateway and the header its requests carry."""

    extra: str  # top-level YAML: database, redis, auth
    headers: bytes  # header lines, each ending in CRLF


def prepare(stack: contextlib.ExitStack, notes: list[str]) -> Full | None:
    """None (with a note) when PostgreSQL or Redis cannot be reached."""
    import psycopg
    import redis

    from citadel_proxy.auth.keys import generate_key, hash_key

    schema = f"citadel_bench_{secrets.token_hex(6)}"
    prefix = f"citadel-bench:{secrets.token_hex(6)}:"
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        stack.callback(_drop_schema, schema)
        _migrate_without_autovacuum(schema)
        client = redis.Redis(*REDIS, socket_connect_timeout=3)
        client.ping()
        stack.callback(_delete_keys, client, prefix)
    except (psycopg.Error, redis.RedisError) as exc:
        notes.append(f"uv-full skipped: PostgreSQL or Redis is not reachable ({exc})")
        return None
    key = generate_key()
    sections = {
        "database": {
            "host": "127.0.0.1",
            "port": PG_PORT,
            "database": "test",
            "user": "postgres",
            "ssl_mode": "disable",
            "schema": schema,
        },
        "redis": {"host": REDIS[0], "port": REDIS[1], "key_prefix": prefix},
        "auth": {
            "keys": [{"name": "bench", "sha256": hash_key(key).hex(), "scopes": ["inference", "embeddings"]}]
        },
    }
    # JSON is YAML: one line per section, no quoting to get wrong.
    extra = "".join(f"{name}: {json.dumps(value)}\n" for name, value in sections.items())
    return Full(extra, f"Authorization: Bearer {key}\r\n".encode())


def gateway_spec(
    stack: contextlib.ExitStack,
    workdir: Path,
    name: str,
    *,
    full: bool,
    notes: list[str],
    server: str = "uvicorn",
    without: str | None = None,
) -> tuple[GatewaySpec, bytes] | None:
    """A gateway's spec and the header lines its requests carry: the bare pipelines, or (`full`) the
    repository's with every stage, PostgreSQL and Redis prepared (`without`: one stage left out). None,
    with a note, when `full` and PostgreSQL or Redis cannot be reached."""
    if not full:
        bare_pipelines(workdir)
        return GatewaySpec(name, server=server), b""
    prepared = prepare(stack, notes)
    if prepared is None:
        return None
    full_pipelines(workdir, without)
    spec = GatewaySpec(name, server=server, pipelines="pipelines-full", extra=prepared.extra)
    return spec, prepared.headers


def with_audit_linger(spec: GatewaySpec, linger_s: float) -> GatewaySpec:
    """`spec` with the audit writer waiting `linger_s` for a batch (`audit.linger_s`)."""
    return replace(spec, extra=spec.extra + f"audit: {{linger_s: {linger_s:g}}}\n")


def _migrate_without_autovacuum(schema: str) -> None:
    import psycopg

    from citadel_proxy.audit.migrate import migrate

    migrate(PG_DSN, schema)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for table in AUDIT_TABLES:
            conn.execute(f'ALTER TABLE "{schema}"."{table}" SET (autovacuum_enabled = off)')


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _delete_keys(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
