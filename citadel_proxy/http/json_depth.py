"""How deeply a JSON text nests, for the parts of a request the gateway passes on without a fixed shape.

The typed parts of a request have the depth of their struct. msgspec refuses deeper nesting anywhere only
at Python's recursion limit (a RecursionError, caught where a body is decoded); free-form values (tool
parameters, JSON schemas, tool-call arguments, embeddings options) are measured here against the
configured limit. They are small: counting their brackets settles almost every one in a C loop, and
only a value with more brackets than the limit has its strings removed and its brackets walked.
"""

from __future__ import annotations

import re
from itertools import accumulate

from citadel_proxy import errors

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text `raw` nests arrays and objects more than `limit` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def check_depth(raw: bytes | memoryview, limit: int, param: str) -> None:
    if raw and deeper_than(bytes(raw), limit):
        raise too_deep(limit, param)


def too_deep(limit: int | None, param: str | None = None) -> errors.InvalidRequest:
    """The 400 for JSON nested past `limit` (None: past what the decoder can hold)."""
    deeper = f"deeper than {limit} levels" if limit is not None else "too deeply to decode"
    where = f"{param}: " if param else ""
    return errors.InvalidRequest(f"{where}JSON nested {deeper}", param=param, code="json_too_deep")
