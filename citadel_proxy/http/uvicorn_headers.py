"""uvicorn's check of response header names, remembered per name.

uvicorn's httptools protocol runs a regex over the name and the value of every header of every response
(`HEADER_RE`, `HEADER_VALUE_RE` in uvicorn.protocols.http.httptools_impl). The names a worker sends are
a few dozen constants (the gateway's own, starlette's, the rate-limit headers), so here a name found
valid once is remembered, and checking it again is a dict lookup in C rather than a regex run. Only
names that uvicorn's own pattern found valid are remembered, at most `MAX_NAMES` of them: what uvicorn
refuses is unchanged (a name must be bytes, as ASGI says: an unhashable bytearray is refused with a
TypeError). Values differ from one response to the next and keep uvicorn's check.
"""

from __future__ import annotations

import re

from uvicorn.protocols.http import httptools_impl

from citadel_proxy.http.name_memo import MAX_NAMES, NameMemo

__all__ = ["MAX_NAMES", "NameCheck", "install"]


class _ValidNames(NameMemo[bytes, None]):
    """Names that passed `pattern`; looking up any other one runs the pattern (and remembers it)."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        super().__init__()
        self._pattern = pattern

    def __missing__(self, name: bytes) -> re.Match[bytes] | None:
        invalid = self._pattern.search(name)
        if invalid is None and type(name) is bytes:
            self.keep(name, None)
        return invalid


class NameCheck:
    """What uvicorn calls as `HEADER_RE.search(name)`: None for a valid name, else the offending match."""

    __slots__ = ("pattern", "search")

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        # The dict's own __getitem__: a remembered name never runs Python code.
        self.search = _ValidNames(pattern).__getitem__


def install() -> bool:
    """Put the remembering check in place of uvicorn's name regex; False if uvicorn has none (or it is
    already in place), in which case uvicorn is left as it is."""
    pattern = getattr(httptools_impl, "HEADER_RE", None)
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, bytes):
        return False
    httptools_impl.HEADER_RE = NameCheck(pattern)  # type: ignore[assignment]
    return True
