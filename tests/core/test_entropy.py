"""The id entropy pool: bytes handed out once each, never shared with a forked child."""

from __future__ import annotations

import os

from citadel_proxy.entropy import random_bytes


def test_bytes_are_never_handed_out_twice_across_pages() -> None:
    taken = [random_bytes(16) for _ in range(2000)]  # several 4 KiB pages
    assert all(len(b) == 16 for b in taken)
    assert len(set(taken)) == len(taken)
    assert len(random_bytes(10_000)) == 10_000  # larger than a page


def test_a_forked_child_does_not_reuse_the_parents_bytes() -> None:
    random_bytes(1)  # the parent has a page in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_bytes(16)
