"""What a client's `Cache-Control` asks of the gateway's caches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

X_CACHE = "X-Cache"


@dataclass(frozen=True, slots=True)
class Directives:
    """`no-cache`: answer fresh, but keep the answer for others; `no-store`: leave the cache out entirely."""

    read: bool = True
    store: bool = True

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Directives:
        value = headers.get("cache-control")
        if not value:
            return _DEFAULT
        tokens = {part.strip().lower() for part in value.split(",")}
        if "no-store" in tokens:
            return cls(read=False, store=False)
        if "no-cache" in tokens:
            return cls(read=False, store=True)
        return _DEFAULT


_DEFAULT = Directives()
