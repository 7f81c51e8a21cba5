"""SQLite side of the audit trail (the embedded default): one transaction stores a batch, idempotently."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from citadel_proxy.audit.errors import StoreRejected, StoreUnavailable
from citadel_proxy.audit.refusals import RefusalRecord, split
from citadel_proxy.audit.sqlite_file import SqliteFile, migrate_sqlite


class _Message(msgspec.Struct):
    role: str
    content: str | None = None
    sha256: str | None = None
    bytes: int = 0
    truncated: bool = False


class _Row(msgspec.Struct):
    """The fields of an encoded record that the tables hold; the documents stay JSON text as encoded."""

    id: str
    time: datetime
    route: str
    pipeline: str
    stream: bool
    model_requested: str
    model: str
    key_name: str | None = None
    client: str | None = None
    conversation_id: str | None = None
    status: int = 200
    error_code: str | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    content_mode: str = "full"
    request: msgspec.Raw = msgspec.Raw(b"{}")
    response: msgspec.Raw = msgspec.Raw(b"null")  # (msgspec decodes no union with Raw)
    messages: list[_Message] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(_Row).decode
_decode_refusal = msgspec.json.Decoder(RefusalRecord).decode

_CONVERSATION = "INSERT INTO conversations VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
_REQUEST = (
    "INSERT INTO audit_requests (id, created_at, conversation_id, route, pipeline, stream, model_requested,"
    " model, key_name, client_addr, status, error_code, ttft_ms, duration_ms, prompt_tokens,"
    " completion_tokens, cache_hit, content_mode, request, response)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_REFUSAL = (
    "INSERT INTO audit_refusals (id, first_at, last_at, count, client_addr, route, status, reason, key_name,"
    " request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# A message of a request already stored conflicts on (request_id, position): a replay adds nothing.
_MESSAGE = (
    "INSERT INTO messages (request_id, position, conversation_id, created_at, role, content,"
    " content_sha256, content_bytes, truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def utc_text(value: datetime) -> str:
    """The stored form of a time: fixed-width UTC, so comparing the text compares the times."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _uuid(value: str) -> str:
    """Canonical text, as PostgreSQL's uuid type reads and writes it; ValueError if it is no UUID."""
    return str(uuid.UUID(value))


class _Batch:
    """A batch's rows for the three tables, checked and converted before the transaction starts."""

    def __init__(self, encoded: Sequence[bytes]) -> None:
        exchanges, refusals = split(encoded)
        self.refusals = [
            (_uuid(r.id), utc_text(r.first_at), utc_text(r.last_at), r.count, r.client, r.route, r.status,
             r.reason, r.key_name, r.request_id)
            for r in map(_decode_refusal, refusals)
        ]  # fmt: skip
        rows = sorted(((utc_text(row.time), row) for row in map(_decode, exchanges)), key=lambda p: p[0])
        self.requests: list[tuple[object, ...]] = []
        self.messages: list[tuple[object, ...]] = []
        first: dict[str, tuple[str, str | None, str]] = {}
        for at, row in rows:
            rid, conversation = _uuid(row.id), row.conversation_id
            if conversation is not None:
                conversation = _uuid(conversation)
                # As in PostgreSQL: a conversation takes its first record's time, key and model.
                first.setdefault(conversation, (at, row.key_name, row.model))
            response = bytes(row.response).decode()
            self.requests.append((
                rid, at, conversation, row.route, row.pipeline, row.stream, row.model_requested, row.model,
                row.key_name, row.client, row.status, row.error_code, row.ttft_ms, row.duration_ms,
                row.prompt_tokens, row.completion_tokens, row.cache_hit, row.content_mode,
                bytes(row.request).decode(), None if response == "null" else response,
            ))  # fmt: skip
            self.messages += [
                (rid, i, conversation, at, m.role, m.content, m.sha256, m.bytes, m.truncated)
                for i, m in enumerate(row.messages)
            ]
        self.conversations = [(cid, *head) for cid, head in first.items()]

    def store(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_CONVERSATION, self.conversations)
            conn.executemany(_REQUEST, self.requests)
            conn.executemany(_MESSAGE, self.messages)
            conn.executemany(_REFUSAL, self.refusals)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _store(encoded: Sequence[bytes], conn: sqlite3.Connection) -> None:
    # Decoded on the writer's thread too: a batch of 500 is ~10 ms of Python the event loop never waits on.
    _Batch(encoded).store(conn)


class SqliteStore:
    """Inserts batches on the file's writer thread; says whether a failure is worth retrying."""

    def __init__(self, file: SqliteFile, timeout_s: float) -> None:
        self._file = file
        self._timeout_s = timeout_s

    async def migrate(self) -> None:
        """Create or bring the schema up to date; StoreUnavailable when the file cannot be opened."""
        try:
            await self._file.run(migrate_sqlite)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite audit store {self._file.path} cannot be prepared: {exc}") from exc

    async def insert(self, encoded: Sequence[bytes]) -> None:
        """Store encoded records (`encode_record`); one already stored is skipped."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._file.run(functools.partial(_store, encoded))
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise StoreRejected(f"SQLite refused audit records: {exc}") from exc
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise StoreRejected(f"SQLite refused audit records: {exc}") from exc
        except (sqlite3.Error, TimeoutError, OSError) as exc:
            # Locked past the timeout, disk full or read-only, not migrated: all fixable, so keep and retry.
            raise StoreUnavailable(f"SQLite cannot store audit records now: {exc}") from exc
