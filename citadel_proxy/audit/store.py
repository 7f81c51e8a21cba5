"""PostgreSQL side of the audit trail: one statement (one round trip) stores a whole batch, idempotently."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from citadel_proxy.audit.errors import StoreRejected, StoreUnavailable, reason
from citadel_proxy.audit.refusals import INSERT_REFUSALS, split

# The batch arrives as one jsonb array (%t: in text format, the JSON itself); data-modifying CTEs insert
# conversations, requests and messages in a single statement. ON CONFLICT makes a replayed record a
# no-op, and messages are inserted only for requests this statement actually inserted.
# A conversation belongs to the key that opened it: a record naming another key's conversation (one the
# request-time claim could not check, PostgreSQL being down then) is stored in a conversation of its own,
# named by the record's id, never in theirs.
_INSERT = b"""
WITH given AS (
    SELECT DISTINCT ON (b.id) b.* FROM jsonb_to_recordset(%t) AS b(
        id uuid, "time" timestamptz, conversation_id text, route text, pipeline text, stream boolean,
        model_requested text, model text, key_name text, client text, status smallint,
        error_code text, ttft_ms double precision, duration_ms double precision, prompt_tokens integer,
        completion_tokens integer, cache_hit boolean, content_mode text, nul_escaped boolean,
        request jsonb, response jsonb, messages jsonb, truncation jsonb, backend text, attempts jsonb)
), owners AS (
    SELECT DISTINCT ON (g.conversation_id) g.conversation_id AS id,
        CASE WHEN c.id IS NULL THEN g.key_name ELSE c.key_name END AS key_name
    FROM given g LEFT JOIN LATERAL (
        -- LIMIT keeps this one lookup by key per record. Joined as a table, the conversations were
        -- read whole and hashed for every batch while the planner took the table for a small one.
        SELECT c.id, c.key_name FROM conversations c WHERE c.id = g.conversation_id LIMIT 1
    ) c ON true
    WHERE g.conversation_id IS NOT NULL
    ORDER BY g.conversation_id, g."time"
), batch AS (
    SELECT g.*, CASE WHEN o.id IS NULL OR o.key_name IS NOT DISTINCT FROM g.key_name
        THEN g.conversation_id ELSE g.id::text END AS conv
    FROM given g LEFT JOIN owners o ON o.id = g.conversation_id
), new_conversations AS (
    INSERT INTO conversations (id, started_at, key_name, model)
    SELECT DISTINCT ON (conv) conv, "time", key_name, model
    FROM batch WHERE conv IS NOT NULL
    ORDER BY conv, "time"
    ON CONFLICT (id) DO NOTHING
), new_requests AS (
    INSERT INTO audit_requests (id, created_at, conversation_id, route, pipeline, stream, model_requested,
        model, key_name, client_addr, status, error_code, ttft_ms, duration_ms, prompt_tokens,
        completion_tokens, cache_hit, content_mode, nul_escaped, request, response, truncation, backend,
        attempts)
    SELECT id, "time", conv, route, pipeline, stream, model_requested, model, key_name,
        client, status, error_code, ttft_ms, duration_ms, prompt_tokens, completion_tokens,
        cache_hit, content_mode, coalesce(nul_escaped, false), request, response, truncation, backend,
        attempts
    FROM batch
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO messages (request_id, position, conversation_id, created_at, role, content, content_sha256,
    content_bytes, truncated)
SELECT b.id, m.ordinal - 1, b.conv, b."time", m.role, m.content, m.sha256, coalesce(m.bytes, 0),
    coalesce(m.truncated, false)
FROM batch b
JOIN new_requests n ON n.id = b.id
CROSS JOIN LATERAL ROWS FROM (
    jsonb_to_recordset(b.messages) AS (role text, content text, sha256 text, bytes integer, truncated boolean)
) WITH ORDINALITY AS m(role, content, sha256, bytes, truncated, ordinal)
ON CONFLICT DO NOTHING
"""

# A batch larger than this goes over a connection of its own (`PostgresStore._connection`): rare (a large
# request's record), and the connection costs milliseconds.
OWN_CONNECTION_BYTES = 1024 * 1024


_encode = msgspec.json.Encoder().encode
_NUL_JSON = b"\\u0000"
_UNESCAPE = re.compile(r"\\(\\|0)")


def escape_nul(value: Any) -> Any:
    """Every string with `\\` doubled and NUL as `\\0`: PostgreSQL text and jsonb cannot hold NUL."""
    return _map_strings(value, lambda s: s.replace("\\", "\\\\").replace("\x00", "\\0"))


def unescape_nul(value: Any) -> Any:
    return _map_strings(value, lambda s: _UNESCAPE.sub(lambda m: "\\" if m[1] == "\\" else "\x00", s))


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string in it, dictionary keys included."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {_map_strings(k, change): _map_strings(v, change) for k, v in value.items()}
    return value


def _row(encoded: bytes) -> bytes:
    """An encoded record as the batch's JSON row: as it is (the insert above names the fields as the
    record does; messages get their positions from their order), unless it holds a NUL."""
    if _NUL_JSON in encoded:
        row = escape_nul(msgspec.json.decode(encoded)) | {"nul_escaped": True}
        return _encode(row)
    return encoded


def encode_batch(encoded: Sequence[bytes], *, escaped: bool = False) -> Jsonb:
    """The batch as one jsonb parameter, handed to psycopg as bytes (never decoded to str and back).

    As the records are: PostgreSQL refuses a batch holding a NUL (`UntranslatableCharacter`), and
    `PostgresStore.insert` sends such a batch again `escaped` (each record holding a NUL, `_row`). A
    NUL is rare; scanning every record for one cost more than the rest of the batch's making.
    One join makes the array, its brackets joined to the first and last record: a batch is up to
    megabytes, and every further copy of it (brackets added by concatenation) cost as much again.
    """
    rows = list(map(_row, encoded)) if escaped else list(encoded)
    if not rows:
        return Jsonb(b"[]", dumps=_as_is)
    rows[0] = b"[" + rows[0]
    rows[-1] += b"]"
    return Jsonb(b",".join(rows), dumps=_as_is)


def _as_is(payload: bytes) -> bytes:
    return payload


def with_statement_timeout(conninfo: str, timeout_s: float) -> str:
    """`conninfo` whose sessions stop any statement after `timeout_s`: the audit pool's (service.py).

    A setting of the session, made when it connects, rather than of each batch's transaction: a batch
    is then one statement, with no transaction and no setting to send around it.
    """
    options = conninfo_to_dict(conninfo).get("options")
    timeout = f"-c statement_timeout={max(1, int(timeout_s * 1000))}"
    return make_conninfo(conninfo, options=f"{options} {timeout}" if options else timeout)


class PostgresStore:
    """Inserts batches through the pool; says whether a failure is worth retrying.

    The pool's connections stop a statement themselves at `timeout_s` (`with_statement_timeout`).
    """

    def __init__(self, pool: AsyncConnectionPool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def insert(self, encoded: Sequence[bytes]) -> None:
        """Store encoded records (`encode_record`); one already stored is skipped."""
        exchanges, refusals = split(encoded)
        try:
            # The server stops the statement itself at the same limit (the session's statement_timeout):
            # a cancel from this side can be lost (sent while the batch is still being sent), and a batch
            # that commits after its writer gave up keeps a backend busy and is counted as failed.
            async with asyncio.timeout(self._timeout_s), self._connection(sum(map(len, encoded))) as conn:
                try:
                    await self._execute(conn, exchanges, refusals, escaped=False)
                except psycopg.errors.UntranslatableCharacter:
                    # A NUL somewhere (jsonb holds none): the records that hold one, escaped (`_row`).
                    # Nothing of the first try was stored: it was one statement, or one transaction.
                    await self._execute(conn, exchanges, refusals, escaped=True)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise StoreRejected(f"PostgreSQL refused audit records: {reason(exc)}") from exc
        except (TimeoutError, psycopg.errors.QueryCanceled) as exc:
            message = f"no answer within write_timeout_s ({self._timeout_s:g} s) for {len(encoded)} records"
            raise StoreUnavailable(f"PostgreSQL cannot store audit records now: {message}") from exc
        except (psycopg.Error, OSError) as exc:
            # Down, unreachable, not migrated, missing privileges: all fixable, so keep and retry.
            raise StoreUnavailable(f"PostgreSQL cannot store audit records now: {reason(exc)}") from exc

    @staticmethod
    async def _execute(
        conn: psycopg.AsyncConnection[Any], exchanges: list[bytes], refusals: list[bytes], *, escaped: bool
    ) -> None:
        if exchanges and refusals:
            # Both or neither, in one round trip.
            async with conn.pipeline(), conn.transaction():
                await conn.execute(_INSERT, (encode_batch(exchanges, escaped=escaped),))
                await conn.execute(INSERT_REFUSALS, (encode_batch(refusals, escaped=escaped),))
        elif refusals:
            await conn.execute(INSERT_REFUSALS, (encode_batch(refusals, escaped=escaped),))
        else:
            # One statement is atomic by itself (autocommit). An empty batch is sent too: one round
            # trip that stores nothing, to learn whether the store takes writes.
            await conn.execute(_INSERT, (encode_batch(exchanges, escaped=escaped),))

    @contextlib.asynccontextmanager
    async def _connection(self, batch_bytes: int) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection, or for a large batch one of its own, closed afterwards.

        libpq's send buffer grows to the largest batch a connection sent and is never shrunk: a large
        request's record sent on a pooled connection would stay in the worker as long as the connection.
        """
        conninfo, kwargs = self._pool.conninfo, self._pool.kwargs
        # (A pool may be given functions that make its parameters: not the audit pool, service.py.)
        if (
            batch_bytes <= OWN_CONNECTION_BYTES
            or not isinstance(conninfo, str)
            or not isinstance(kwargs, dict)
        ):
            async with self._pool.connection(timeout=self._timeout_s) as conn:
                yield conn
            return
        own = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        async with own:
            yield own
