"""Header names worked out once per process: the names a worker sends are a few dozen constants (the
gateway's own, Starlette's, the rate limits'), so a name checked, lowered or encoded once is looked up
after that, in C. Bounded: past MAX_NAMES distinct names, a name is worked out every time."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Far more names than a worker sends.
MAX_NAMES = 256


class NameMemo(dict[K, V]):
    """A memo whose subclasses work a missing name out in `__missing__` and `keep` the result."""

    __slots__ = ()

    def keep(self, name: K, value: V) -> V:
        """`value`, remembered for `name` while fewer than MAX_NAMES names are."""
        if len(self) < MAX_NAMES:
            self[name] = value
        return value
