"""The `audit` section of the config: how the writer batches, and how durable a record is on return."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class AuditOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tuning of the writer and the spool; the defaults suit one gateway process."""

    # queue: a record waits in memory for its batch (fast; a SIGKILL loses the records of that moment).
    # spool: every record is fsync'd to the spool before its response completes, then moved to
    # PostgreSQL from there: nothing is lost even to SIGKILL, at the cost of one grouped fsync per burst.
    durability: Literal["queue", "spool"] = "queue"
    queue_size: Annotated[int, Meta(ge=1)] = 10_000
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 500
    # The spool (or, without a database, the audit log) starts a new file past this size.
    segment_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024 * 1024
    retry_s: Annotated[float, Meta(gt=0)] = 2.0
    write_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    # How long the writer waits for more records before a batch that is not full (never the response).
    linger_s: Annotated[float, Meta(ge=0, le=1)] = 0.05
    # Default: <paths.data>/audit
    spool_dir: str | None = None
