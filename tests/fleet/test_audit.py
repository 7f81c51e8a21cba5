"""The audit record names the backend that answered and every backend tried, in both stores."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.audit.test_gateway_audit import database_section
from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import chat, fleet_gateway, post, write_fleet_config

_ROWS = "SELECT backend, attempts FROM audit_requests ORDER BY created_at"


@pytest.mark.parametrize("store", ["postgres", "sqlite"])
async def test_audit_lists_attempts_and_the_backend_that_answered(
    fakes: dict[str, FakeOllama], tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    fakes["gpu-a"].behavior = Behavior(error_status=500)  # phi3 is loaded there: tried first, fails
    if store == "postgres":
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
        section = database_section(dsn, schema)
    else:
        section = "database: null"
    async with fleet_gateway(write_fleet_config(tmp_path, fakes, top=section), fakes) as gw:
        status, headers, _ = await post(gw.url, chat("phi3"))
        assert status == 200
        answered = headers["x-citadel-backend"]
        status, _, _ = await post(gw.url, chat("mixtral"))
        assert status == 200
    rows: list[tuple[Any, ...]]
    if store == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "audit.sqlite3")) as lite:
            rows = [(b, json.loads(a)) for b, a in lite.execute(_ROWS).fetchall()]
    else:
        with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
            rows = conn.execute(_ROWS).fetchall()
    assert rows == [(answered, ["gpu-a", answered]), ("gpu-b", ["gpu-b"])]
