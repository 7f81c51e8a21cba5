"""A gateway on PostgreSQL for the refusal tests, and readers of what it kept (rows, series, lines)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from citadel_proxy.auth.keys import generate_key, hash_key
from tests.audit.test_gateway_audit import database_section
from tests.core.conftest import REPO, write_config

# A valid key without the `inference` scope: its refusals are 403s that name it.
EMBEDDER_KEY = generate_key()
EMBEDDER = {"Authorization": f"Bearer {EMBEDDER_KEY}"}
BAD_KEY = {"Authorization": "Bearer cit_" + "x" * 43}


def gateway_config(
    tmp_path: Path,
    ollama_port: int,
    dsn: str,
    schema: str,
    *,
    auth: str = "",
    audit: str = "",
    gateway: str = "",
    db_port: int | None = None,
) -> Path:
    """The test config on `schema` (through `db_port` when given), with the embeddings-only key; `auth`
    adds settings to the auth section, `audit` to the audit section, `gateway` under gateway."""
    db = database_section(dsn, schema)
    if db_port is not None:
        db = re.sub(r"port: \d+", f"port: {db_port}", db)[:-1] + ", pool_timeout: 1}"
    return write_config(
        tmp_path,
        ollama_port,
        REPO / "pipelines",
        extra_gateway=gateway,
        # Items of the auth section after its keys list (two-space indent: siblings of `keys`).
        extra_keys=f"    - {{name: embedder, sha256: {hash_key(EMBEDDER_KEY).hex()}, scopes: [embeddings]}}\n"
        + auth,
        extra=f"{db}\naudit: {{retry_s: 0.2, write_timeout_s: 2, {audit}}}",
    )


def refusal_rows(dsn: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        cursor = conn.execute(
            "SELECT client_addr, route, status, reason, key_name, count, first_at, last_at, request_id "
            "FROM audit_refusals ORDER BY first_at, route"
        )
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of one series by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "citadel.access"]
