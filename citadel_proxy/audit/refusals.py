"""The audit record of requests refused before their pipeline ran: metadata only, aggregated.

Refusals of one client, reason, route and key within an interval are one record with a count and the
first and last time, so a flood of bad requests costs the writer one row per group, not one per request.
The record carries its kind first (`{"kind":"refusal",...`), so the spool and the store tell it from an
exchange's record by its first bytes, without decoding either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import methodcaller

import msgspec

REFUSAL_PREFIX = b'{"kind":"refusal"'


class RefusalRecord(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="refusal"):
    id: str
    first_at: datetime
    last_at: datetime
    count: int
    client: str | None
    route: str
    status: int
    reason: str  # the error code the client got
    key_name: str | None = None
    request_id: str = ""  # the first refused request's X-Request-ID, to find its log line


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RefusalRecord).decode


def encode_refusal(record: RefusalRecord) -> bytes:
    return _encode(record)


def is_refusal(encoded: bytes) -> bool:
    return encoded.startswith(REFUSAL_PREFIX)


_refusal_prefix = methodcaller("startswith", REFUSAL_PREFIX)


def reencode_refusal(line: bytes) -> bytes:
    """A spooled refusal checked and encoded again (msgspec.DecodeError when it is torn)."""
    return _encode(_decode(line))


# ON CONFLICT: a batch replayed from the spool after a failed write stores each record once.
INSERT_REFUSALS = b"""
INSERT INTO audit_refusals (id, first_at, last_at, count, client_addr, route, status, reason, key_name,
    request_id)
SELECT id, first_at, last_at, count, client, route, status, reason, key_name, request_id
FROM jsonb_to_recordset(%t) AS b(id uuid, first_at timestamptz, last_at timestamptz, count integer,
    client text, route text, status smallint, reason text, key_name text, request_id text)
ON CONFLICT (id) DO NOTHING
"""


def split(encoded: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Exchanges and refusals of a batch, each in its order."""
    # Most batches hold no refusal: found out in C (map over startswith), not a Python call a record.
    if not any(map(_refusal_prefix, encoded)):
        return list(encoded), []
    exchanges: list[bytes] = []
    refusals: list[bytes] = []
    for record in encoded:
        (refusals if is_refusal(record) else exchanges).append(record)
    return exchanges, refusals
