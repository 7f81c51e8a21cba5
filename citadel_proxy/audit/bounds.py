"""Keeping one record within `audit.max_record_bytes`: its documents summarised, its contents shortened.

Digests and sizes always describe the whole original, so a shortened record still proves what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from citadel_proxy.audit.content import ContentPolicy
from citadel_proxy.audit.records import AuditMessage, AuditRecord, Truncation, encode_record
from citadel_proxy.config.schema import AuditOptions

# Roughly what a message costs besides its content (role, digest, size, keys).
_MESSAGE_OVERHEAD = 160


@dataclass(frozen=True, slots=True)
class Limits:
    """How big a record and a batch may be, and how often a record may fail before it is set aside."""

    max_record_messages: int = 1000
    max_record_bytes: int = 8 * 1024 * 1024
    max_batch_bytes: int = 16 * 1024 * 1024
    max_attempts: int = 3

    @classmethod
    def of(cls, options: AuditOptions) -> Limits:
        return cls(
            max_record_messages=options.max_record_messages,
            max_record_bytes=options.max_record_bytes,
            max_batch_bytes=options.max_batch_bytes,
            max_attempts=options.max_attempts,
        )


def within(record: AuditRecord, encoded: bytes, max_bytes: int) -> bytes:
    """`encoded` (the record's JSON) if it fits in max_bytes, else the record shortened until it does."""
    if len(encoded) <= max_bytes:
        return encoded
    noted = msgspec.structs.replace(record.truncation or Truncation(), record_bytes=len(encoded))
    # A quarter each for the request and response documents, half for the messages; smaller while needed.
    share = max_bytes // 4
    while share >= 64:
        per_message = max(0, 2 * share // max(1, len(record.messages)) - _MESSAGE_OVERHEAD)
        smaller = encode_record(
            msgspec.structs.replace(
                record,
                request=_summary(record.request, share),
                response=_summary(record.response, share),
                messages=[_cut(m, per_message) for m in record.messages],
                truncation=noted,
            )
        )
        if len(smaller) <= max_bytes:
            return smaller
        share //= 4
    # Past that, only what identifies the exchange and its digests (a limit set below the message count).
    return encode_record(
        msgspec.structs.replace(
            record,
            request={},
            response=None,
            messages=[_cut(m, 0) for m in record.messages],
            truncation=noted,
        )
    )


def _summary(document: Any, limit: int) -> Any:
    return ContentPolicy("full", limit).document(document)


def _cut(message: AuditMessage, limit: int) -> AuditMessage:
    if message.content is None:
        return message
    raw = message.content.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return message
    # errors="ignore": a character cut in half at the limit is dropped rather than stored half.
    head = raw[:limit].decode("utf-8", "ignore") or None
    return msgspec.structs.replace(message, content=head, truncated=True)
