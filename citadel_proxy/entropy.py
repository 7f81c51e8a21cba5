"""Random bytes for ids, read from the kernel a page at a time.

Every request mints three or four ids (request, completion, audit record, conversation), and one
getrandom() call each cost a microsecond or more of system time under load. The bytes are the kernel's
CSPRNG output all the same (os.urandom), handed out once each: conversation ids stay unguessable.
"""

from __future__ import annotations

import os
import threading

_PAGE = 4096


class _Pool:
    """os.urandom's bytes, read _PAGE at a time. Process-wide like the kernel's own generator: it holds
    no application state, and a forked child starts with an empty pool (no id is minted twice)."""

    __slots__ = ("_at", "_bytes", "_lock")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Empty, with a fresh lock (a child forked while another thread held the old one)."""
        self._lock = threading.Lock()  # ids are minted on the loop, but a thread must not share bytes
        self._bytes, self._at = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            at = self._at
            end = at + count
            if end > len(self._bytes):
                self._bytes, at, end = os.urandom(max(_PAGE, count)), 0, count
            self._at = end
            return self._bytes[at:end]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)

random_bytes = _pool.take
