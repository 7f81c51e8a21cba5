"""The multi-worker parent: signals that arrive once shutdown has begun."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from multiprocessing import get_context

import pytest

from citadel_proxy.supervisor import _supervise


@pytest.fixture
def own_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_during_the_graceful_stop_is_harmless(own_handlers: None) -> None:
    worker = get_context("spawn").Process(target=os.getpid)  # ends at once: the parent stops waiting
    worker.start()
    _supervise([worker])
    worker.join()
    # Another reload or stop while the workers finish: nothing to do, and above all no EBADF.
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
