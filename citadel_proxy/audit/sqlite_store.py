"""SQLite side of the audit trail (the embedded default): one transaction stores a batch, idempotently."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from citadel_proxy.audit.conversations import normalise
from citadel_proxy.audit.errors import StoreRejected, StoreUnavailable, reason
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
    truncation: msgspec.Raw = msgspec.Raw(b"null")
    backend: str | None = None
    attempts: msgspec.Raw = msgspec.Raw(b"[]")


_decode = msgspec.json.Decoder(_Row).decode
_decode_refusal = msgspec.json.Decoder(RefusalRecord).decode

_CONVERSATION = "INSERT INTO conversations VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
_REQUEST = (
    "INSERT INTO audit_requests (id, created_at, conversation_id, route, pipeline, stream, model_requested,"
    " model, key_name, client_addr, status, error_code, ttft_ms, duration_ms, prompt_tokens,"
    " completion_tokens, cache_hit, content_mode, request, response, truncation, backend, attempts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_OWNER = "SELECT key_name FROM conversations WHERE id = ?"
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


def _json_or_none(raw: msgspec.Raw) -> str | None:
    text = bytes(raw).decode()
    return None if text == "null" else text


def _conversation_id(raw: str) -> str:
    found = normalise(raw)
    if found is None:
        raise ValueError(f"{raw[:140]!r} is not a conversation id")
    return found


class _Batch:
    """A batch's rows for the tables, checked and converted before the transaction starts; which
    conversation each record joins is settled inside it, against the owners already stored."""

    def __init__(self, encoded: Sequence[bytes]) -> None:
        exchanges, refusals = split(encoded)
        self.refusals = [
            (_uuid(r.id), utc_text(r.first_at), utc_text(r.last_at), r.count, r.client, r.route, r.status,
             r.reason, r.key_name, r.request_id)
            for r in map(_decode_refusal, refusals)
        ]  # fmt: skip
        self.rows = sorted(((utc_text(row.time), row) for row in map(_decode, exchanges)), key=lambda p: p[0])
        self.ids = [_uuid(row.id) for _, row in self.rows]
        self.conversation_ids = [
            None if row.conversation_id is None else _conversation_id(row.conversation_id)
            for _, row in self.rows
        ]

    def _owners(self, conn: sqlite3.Connection) -> dict[str, str | None]:
        """Each conversation's key: the stored one, else that of the batch's first record naming it."""
        owners: dict[str, str | None] = {}
        for conversation, (_, row) in zip(self.conversation_ids, self.rows, strict=True):
            if conversation is None or conversation in owners:
                continue
            stored = conn.execute(
                "SELECT key_name FROM conversations WHERE id = ?", (conversation,)
            ).fetchone()
            owners[conversation] = stored[0] if stored is not None else row.key_name
        return owners

    def _tables(self, conn: sqlite3.Connection) -> tuple[list[tuple[object, ...]], ...]:
        owners = self._owners(conn)
        requests: list[tuple[object, ...]] = []
        messages: list[tuple[object, ...]] = []
        first: dict[str, tuple[str, str | None, str]] = {}
        for rid, conversation, (at, row) in zip(self.ids, self.conversation_ids, self.rows, strict=True):
            # As in PostgreSQL: a record of another key never joins the owner's conversation; it gets one
            # of its own, named by its id.
            if conversation is not None and owners[conversation] != row.key_name:
                conversation = rid
            if conversation is not None:
                # A conversation takes its first record's time, key and model.
                first.setdefault(conversation, (at, row.key_name, row.model))
            requests.append((
                rid, at, conversation, row.route, row.pipeline, row.stream, row.model_requested, row.model,
                row.key_name, row.client, row.status, row.error_code, row.ttft_ms, row.duration_ms,
                row.prompt_tokens, row.completion_tokens, row.cache_hit, row.content_mode,
                bytes(row.request).decode(), _json_or_none(row.response), _json_or_none(row.truncation),
                row.backend, bytes(row.attempts).decode(),
            ))  # fmt: skip
            messages += [
                (rid, i, conversation, at, m.role, m.content, m.sha256, m.bytes, m.truncated)
                for i, m in enumerate(row.messages)
            ]
        conversations: list[tuple[object, ...]] = [(cid, *head) for cid, head in first.items()]
        return conversations, requests, messages

    def store(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conversations, requests, messages = self._tables(conn)
            conn.executemany(_CONVERSATION, conversations)
            conn.executemany(_REQUEST, requests)
            conn.executemany(_MESSAGE, messages)
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
        except TimeoutError as exc:
            # TimeoutError says nothing of itself: the log line would end in an empty reason.
            message = f"no answer within write_timeout_s ({self._timeout_s:g} s) for {len(encoded)} records"
            raise StoreUnavailable(f"SQLite cannot store audit records now: {message}") from exc
        except (sqlite3.Error, OSError) as exc:
            # Locked past the timeout, disk full or read-only, not migrated: all fixable, so keep and retry.
            raise StoreUnavailable(f"SQLite cannot store audit records now: {reason(exc)}") from exc
