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
_encode = msgspec.json.Encoder().encode


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


def bounded(record: AuditRecord, max_bytes: int) -> bytes:
    """The record's JSON, shortened (`within`) if it does not fit in max_bytes.

    A record whose messages alone are too large is never encoded whole: with its request document it
    would be twice a large request's body, the largest copy the request made.
    """
    size = 0
    for message in record.messages:  # (a plain loop: cheaper than sum() over a generator, for every record)
        if message.content is not None:
            size += len(message.content)
    if size <= max_bytes:
        return within(record, encode_record(record), max_bytes)
    return _shortened(record, _encoded_size(record), max_bytes)


def _encoded_size(record: AuditRecord) -> int:
    """len(encode_record(record)), its message contents encoded one at a time."""
    bare = [msgspec.structs.replace(m, content="") if m.content is not None else m for m in record.messages]
    size = len(encode_record(msgspec.structs.replace(record, messages=bare)))
    return size + sum(len(_encode(m.content)) - 2 for m in record.messages if m.content is not None)


def within(record: AuditRecord, encoded: bytes, max_bytes: int) -> bytes:
    """`encoded` (the record's JSON) if it fits in max_bytes, else the record shortened until it does."""
    if len(encoded) <= max_bytes:
        return encoded
    return _shortened(record, len(encoded), max_bytes)


def _shortened(record: AuditRecord, size: int, max_bytes: int) -> bytes:
    """The record, `size` bytes encoded, shortened until it fits in max_bytes."""
    noted = msgspec.structs.replace(record.truncation or Truncation(), record_bytes=size)
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
    # Its first `limit` characters hold at least `limit` bytes (or are the whole content): a large
    # message is not encoded whole just to cut it.
    raw = message.content[:limit].encode("utf-8", "surrogatepass")
    if len(raw) <= limit and len(message.content) <= limit:
        return message
    # errors="ignore": a character cut in half at the limit is dropped rather than stored half.
    head = raw[:limit].decode("utf-8", "ignore") or None
    return msgspec.structs.replace(message, content=head, truncated=True)
