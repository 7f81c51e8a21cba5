"""Audit record and conversation ids: canonical UUIDv7 text, time-ordered, never repeated."""

from __future__ import annotations

import time
import uuid

from citadel_proxy.audit.records import new_id


def test_ids_are_canonical_uuid7_in_time_order() -> None:
    ids = []
    for _ in range(2000):
        ids.append(new_id())
        if len(ids) % 500 == 0:
            time.sleep(0.002)  # a few milliseconds apart, so the time prefix moves
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case, dashed: what PostgreSQL's uuid type prints back
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert len(set(ids)) == len(ids)
    stamps = [uuid.UUID(text).int >> 80 for text in ids]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time_ns() // 1_000_000) < 5_000
