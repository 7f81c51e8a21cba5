"""Conversation ids (a client's own, or a UUID) and who owns a conversation: the key that opened it.

The first request naming an id claims it for its key; any other key naming it is refused (403). The
claim is a row in PostgreSQL's `conversations`, so it holds in every worker and after restarts; without
a database it is a file under the spool root, which every worker of the host shares. Owners never
change, so a worker remembers the ones it has seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Protocol

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

# Opaque ids of voice agents and chat apps; `:` also lets `urn:uuid:...` through to be normalised.
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REMEMBERED = 10_000


def normalise(raw: str) -> str | None:
    """The id as stored: a UUID in its canonical form, another valid id as given; None if invalid."""
    if not _ID.fullmatch(raw):
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return raw


class Owners(Protocol):
    async def claim(self, conversation_id: str, key: str | None, *, model: str, at: datetime) -> bool | None:
        """True: the key owns it (now, or already); False: another does; None: cannot tell now."""
        ...

    def remember(self, conversation_id: str, key: str | None) -> None:
        """An id this worker minted for `key`: its record (which stores the owner) may still be queued."""
        ...


class _Remembered:
    """Owners seen lately (an owner never changes, so what is remembered never goes stale)."""

    def __init__(self) -> None:
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    def get(self, conversation_id: str) -> tuple[bool, str | None]:
        if conversation_id not in self._owners:
            return False, None
        self._owners.move_to_end(conversation_id)
        return True, self._owners[conversation_id]

    def put(self, conversation_id: str, owner: str | None) -> None:
        self._owners[conversation_id] = owner
        if len(self._owners) > _REMEMBERED:
            self._owners.popitem(last=False)


# Inserted when new (this key claims it); else the row as it is. A row committed by another worker
# after this statement's snapshot is in neither part: the caller reads it with a second statement.
_CLAIM = b"""
WITH claimed AS (
    INSERT INTO conversations (id, started_at, key_name, model) VALUES (%(id)s, %(at)s, %(key)s, %(model)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING key_name
)
SELECT key_name FROM claimed
UNION ALL
SELECT key_name FROM conversations WHERE id = %(id)s
"""
_OWNER = b"SELECT key_name FROM conversations WHERE id = %s"


class PostgresOwners:
    def __init__(self, pool: AsyncConnectionPool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._seen = _Remembered()

    def remember(self, conversation_id: str, key: str | None) -> None:
        self._seen.put(conversation_id, key)

    async def claim(self, conversation_id: str, key: str | None, *, model: str, at: datetime) -> bool | None:
        known, owner = self._seen.get(conversation_id)
        if not known:
            params = {"id": conversation_id, "at": at, "key": key, "model": model}
            try:
                async with asyncio.timeout(self._timeout_s), self._pool.connection(self._timeout_s) as conn:
                    row = await (await conn.execute(_CLAIM, params)).fetchone()
                    row = row or await (await conn.execute(_OWNER, (conversation_id,))).fetchone()
            except (psycopg.Error, TimeoutError):
                return None  # the records' insert decides (see store.py)
            if row is None:
                return None
            owner = row[0]
            self._seen.put(conversation_id, owner)
        return owner == key


class _Claim(msgspec.Struct, frozen=True):
    key: str | None


class FileOwners:
    """Without a database: one file per claimed conversation under the spool root, never replaced."""

    def __init__(self, root: Path) -> None:
        self._root = root / "conversations"
        self._seen = _Remembered()

    def remember(self, conversation_id: str, key: str | None) -> None:
        self._seen.put(conversation_id, key)

    async def claim(self, conversation_id: str, key: str | None, *, model: str, at: datetime) -> bool | None:
        known, owner = self._seen.get(conversation_id)
        if not known:
            try:
                owner = await asyncio.to_thread(self._claim, conversation_id, key)
            except (OSError, msgspec.DecodeError):
                return None  # a damaged claim file: the request goes on, as with PostgreSQL down
            self._seen.put(conversation_id, owner)
        return owner == key

    def _claim(self, conversation_id: str, key: str | None) -> str | None:
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._root / hashlib.sha256(conversation_id.encode()).hexdigest()
        # Written whole, then linked into place: link fails if the name exists, and a reader never
        # sees a half-written claim.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        try:
            with tmp.open("wb") as file:
                file.write(msgspec.json.encode(_Claim(key)))
                file.flush()
                os.fsync(file.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return msgspec.json.decode(path.read_bytes(), type=_Claim).key
        finally:
            tmp.unlink(missing_ok=True)
        return key
