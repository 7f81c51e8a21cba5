"""What the writer and the management routes need of an audit store (PostgreSQL or SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from citadel_proxy.audit.queries import ConversationDetail, ConversationPage, StatsOut


class AuditStore(Protocol):
    async def insert(self, encoded: Sequence[bytes]) -> None:
        """Store encoded records (`encode_record`); one already stored is skipped.

        StoreUnavailable: nothing was stored and a retry may succeed (the records are spooled);
        StoreRejected: what the records hold is refused (the writer finds the bad one and keeps it aside).
        """


class AuditReader(Protocol):
    """The management API's reads; every store answers them with the same shapes and values."""

    async def conversations(
        self,
        *,
        model: str | None,
        key: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
        text: str | None = None,
    ) -> ConversationPage: ...

    async def conversation(self, conversation_id: str, *, limit: int) -> ConversationDetail | None: ...

    async def stats(self, *, since: datetime | None, until: datetime | None) -> StatsOut: ...
