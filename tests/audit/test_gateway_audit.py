"""Through the real gateway: every inference route and an error leave exactly one audit record."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import Behavior, FakeOllama


def database_section(dsn: str, schema: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return (
        f"database: {{host: {params.get('host', '127.0.0.1')}, port: {params.get('port', 5432)}, "
        f"database: {params.get('dbname', 'test')}, user: {params.get('user', 'postgres')}, "
        f"ssl_mode: disable, schema: {schema}}}"
    )


_ROWS = "SELECT route, status, error_code, stream, completion_tokens, response FROM audit_requests"
_MESSAGES = "SELECT role, content FROM messages WHERE conversation_id = {} ORDER BY created_at, position"


def stored(store: str, request: pytest.FixtureRequest, tmp_path: Path, conversation: str) -> tuple[Any, Any]:
    """The gateway's audit rows (oldest first) and the conversation's messages, from either store."""
    if store == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "audit.sqlite3")) as lite:
            rows = lite.execute(_ROWS + " ORDER BY created_at").fetchall()
            return rows, lite.execute(_MESSAGES.format("?"), (conversation,)).fetchall()
    dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        rows = conn.execute(_ROWS + " ORDER BY created_at").fetchall()
        return rows, conn.execute(_MESSAGES.format("%s"), (conversation,)).fetchall()


@pytest.mark.parametrize("store", ["postgres", "sqlite"])
async def test_each_route_and_an_error_are_recorded_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    conversation = str(uuid.uuid4())
    if store == "postgres":
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
        section = database_section(dsn, schema)
    else:
        section = "database: null"
    async with FakeOllama(behavior=Behavior.counted(6, tokens_per_write=6)) as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines", extra=section)
        async with running_gateway(config, fake) as gw, aiohttp.ClientSession(headers=AUTH) as session:
            calls = [
                ("/v1/chat/completions", CHAT),
                ("/v1/voice/chat/completions", CHAT),
                ("/v1/gui/chat/completions", CHAT),
                ("/v1/copilot/completions", {"model": "coder", "prompt": "def f(", "suffix": "pass"}),
                ("/v1/completions", {"model": "phi3", "prompt": "Once"}),
                ("/v1/agents/stream?type=research", CHAT),
            ]
            for path, body in calls:
                async with session.post(
                    gw.url + path, json=body, headers={"X-Conversation-ID": conversation}
                ) as r:
                    await r.read()
                    assert r.status == 200
                    assert r.headers["X-Conversation-ID"] == conversation
            fake.next(Behavior.counted(5, error_after=2))
            async with session.post(gw.url + "/v1/voice/chat/completions", json=CHAT) as r:
                assert "upstream_error" in (await r.read()).decode()
    # The gateway has shut down: its queue is drained.
    rows, messages = stored(store, request, tmp_path, conversation)
    routes = [row[0] for row in rows]
    assert routes == [path.split("?")[0] for path, _ in calls] + ["/v1/voice/chat/completions"]
    assert [row[1] for row in rows[:-1]] == [200] * 6
    assert rows[-1][1] == 502 and rows[-1][2] == "upstream_error"
    assert bool(rows[1][3]) is True and bool(rows[0][3]) is False
    response = rows[1][5] if isinstance(rows[1][5], dict) else json.loads(rows[1][5])
    assert "w0 w1 w2 w3 w4 w5" in json.dumps(response)
    assert [m[0] for m in messages][:2] == ["user", "assistant"] and len(messages) == 12
