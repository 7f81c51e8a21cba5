"""Random bytes for ids, read from the kernel a page at a time.

Every request mints three or four ids (request, completion, audit record, conversation), and one
getrandom() call each cost a microsecond or more of system time under load. The bytes are the kernel's
CSPRNG output all the same (os.urandom), handed out once each: conversation ids stay unguessable.
"""

from __future__ import annotations

import io
import os

_PAGE = 4096


class _Pool:
    """os.urandom's bytes, read _PAGE at a time. Process-wide like the kernel's own generator: it holds
    no application state, and a forked child starts with an empty pool (no id is minted twice).

    The page is a BytesIO: its read() hands out the next bytes and moves past them in one C call, which
    no other thread can interleave with, where a lock around the same steps in Python cost more than the
    system call the pool saves (README, "A fifth machine"). Threads that find the page used up at once
    each read from a fresh page of their own; the tail left of the old one is never handed out.
    """

    __slots__ = ("_page",)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._page = io.BytesIO()

    def take(self, count: int) -> bytes:
        taken = self._page.read(count)
        if len(taken) < count:
            page = io.BytesIO(os.urandom(max(_PAGE, count)))
            taken = page.read(count)
            self._page = page
        return taken


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)

random_bytes = _pool.take
