"""Fixtures for the audit tests: configs on a fresh schema, a cuttable TCP proxy, context builders."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from starlette.datastructures import Headers

from citadel_proxy.audit.migrate import migrate
from citadel_proxy.audit.records import AuditMessage, AuditRecord, new_id
from citadel_proxy.audit.sqlite_file import sqlite_path
from citadel_proxy.config.schema import Config, Database, Paths
from citadel_proxy.openai.translate import chat_to_request, completion_to_request
from citadel_proxy.openai.wire import ChatMessage, ChatRequest, CompletionRequest
from citadel_proxy.pipeline.spec import Pipeline
from citadel_proxy.pipeline.types import Context, Delta, Principal


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()


def pg_params(dsn: str) -> dict[str, Any]:
    params = conninfo_to_dict(dsn)
    return {"host": params.get("host", "127.0.0.1"), "port": int(params.get("port", 5432)),
            "database": params.get("dbname", "postgres"), "user": params.get("user", "postgres"),
            "password": params.get("password")}  # fmt: skip


def make_config(dsn: str | None, schema: str, tmp: Path, **db: Any) -> Config:
    paths = Paths(data=str(tmp / "data"), backups=str(tmp / "backups"), logs=str(tmp / "logs"))
    if dsn is None:
        return Config(database=None, paths=paths)
    params = pg_params(dsn) | db
    return Config(database=Database(**params, db_schema=schema, ssl_mode="disable"), paths=paths)


@pytest.fixture
def migrated(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> Config:
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    migrate(config.database.conninfo(), pg_schema)
    return config


@pytest.fixture(params=["postgres", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A config whose audit trail is PostgreSQL (a fresh, migrated schema) or the embedded SQLite file."""
    if request.param == "postgres":
        config: Config = request.getfixturevalue("migrated")
        return config
    return make_config(None, "", tmp_path)


@pytest.fixture
async def proxy(postgres_dsn: str) -> AsyncIterator[TcpProxy]:
    params = pg_params(postgres_dsn)
    tcp = TcpProxy(params["host"], params["port"])
    await tcp.start()
    yield tcp
    await tcp.cut()


def fetch(config: Config, query: str, *args: Any) -> list[tuple[Any, ...]]:
    assert config.database is not None
    with psycopg.connect(config.database.conninfo(), autocommit=True) as conn:
        return conn.execute(query.encode(), args or None).fetchall()


def fetch_any(config: Config, query: str) -> list[tuple[Any, ...]]:
    """`query` (SQL both stores read alike, no parameters) on the config's store, PostgreSQL or SQLite."""
    if config.database is not None:
        return fetch(config, query)
    with contextlib.closing(sqlite3.connect(sqlite_path(config))) as conn:
        return conn.execute(query).fetchall()


def execute(config: Config, query: str, *args: Any) -> None:
    assert config.database is not None
    with psycopg.connect(config.database.conninfo(), autocommit=True) as conn:
        conn.execute(query.encode(), args or None)


def pipeline(name: str = "chat") -> Pipeline:
    return Pipeline(name=name, file=f"{name}.yaml", format="chat", routes=("/v1/chat/completions",),
                    agent=False, stream_default=False, timeout_s=60.0, description="", stages=())  # fmt: skip


def chat_context(
    *contents: str,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    key: str | None = "team-a",
    model: str = "phi3",
    assistant_turns: tuple[str, ...] = (),
) -> Context:
    messages = [ChatMessage(role="user", content=c) for c in contents]
    for i, reply in enumerate(assistant_turns):
        messages.insert(2 * i + 1, ChatMessage(role="assistant", content=reply))
    body = ChatRequest(model=model, messages=messages, stream=stream, temperature=0.2)
    principal = Principal(name=key, scopes=frozenset({"inference"})) if key else None
    return Context(
        request_id="req-1",
        pipeline=pipeline(),
        route="/v1/chat/completions",
        client="127.0.0.1",
        headers=Headers(headers or {}),
        request=chat_to_request(body, f"{model}:latest", stream),
        model_requested=model,
        model=f"{model}:latest",
        stream=stream,
        principal=principal,
    )


def completion_context(prompt: str) -> Context:
    body = CompletionRequest(model="phi3", prompt=prompt)
    return Context(
        request_id="req-2",
        pipeline=pipeline("completions"),
        route="/v1/completions",
        client="127.0.0.1",
        headers=Headers({}),
        request=completion_to_request(body, "phi3:latest", False),
        model_requested="phi3",
        model="phi3:latest",
        stream=False,
    )


class FakeStream:
    """A TokenStream yielding the given batches; fills the outcome at the end as the upstream does."""

    def __init__(self, ctx: Context, batches: list[list[Delta]], fail: Exception | None = None) -> None:
        self.ctx = ctx
        self.batches = list(batches)
        self.fail = fail
        self.closed = False

    async def read(self) -> list[Delta] | None:
        await asyncio.sleep(0)
        if self.batches:
            if self.ctx.outcome.first_token_at is None:
                self.ctx.outcome.first_token_at = self.ctx.started + 0.01
            return self.batches.pop(0)
        if self.fail is not None:
            raise self.fail
        self.ctx.outcome.finish_reason = "stop"
        self.ctx.outcome.prompt_tokens, self.ctx.outcome.completion_tokens = 7, 3
        return None

    async def aclose(self) -> None:
        self.closed = True


def record(n: int, conversation: str | None = None) -> AuditRecord:
    return AuditRecord(
        id=new_id(), time=datetime.now(UTC), route="/v1/chat/completions", pipeline="chat", stream=False,
        model_requested="phi3", model="phi3:latest", conversation_id=conversation, duration_ms=1.0,
        request={"n": n}, messages=[AuditMessage(role="user", content=f"message {n}", bytes=9)],
    )  # fmt: skip


def services(sink: Any) -> Any:
    return SimpleNamespace(audit=sink)


async def drain(stream: Any) -> list[Delta]:
    out: list[Delta] = []
    with contextlib.suppress(Exception):
        while (batch := await stream.read()) is not None:
            out += batch
    await stream.aclose()
    return out


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


def stored_records(path: Path) -> list[AuditRecord]:
    """The records in an embedded SQLite store, rebuilt from its rows, in the order they were stored."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        requests = conn.execute("SELECT * FROM audit_requests ORDER BY rowid").fetchall()
        messages = conn.execute(
            "SELECT request_id, role, content, content_sha256 AS sha256, content_bytes AS bytes, truncated"
            " FROM messages ORDER BY request_id, position"
        ).fetchall()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_request.setdefault(message["request_id"], []).append(dict(message))
    return [
        msgspec.convert(
            dict(row)
            | {
                "time": row["created_at"],
                "client": row["client_addr"],
                "request": msgspec.json.decode(row["request"]),
                "response": None if row["response"] is None else msgspec.json.decode(row["response"]),
                "messages": by_request.get(row["id"], []),
                "attempts": msgspec.json.decode(row["attempts"] or "[]"),
            },
            AuditRecord,
            strict=False,
        )
        for row in requests
    ]
