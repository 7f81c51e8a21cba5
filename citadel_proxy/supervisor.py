"""Several worker processes under one parent that forwards SIGHUP instead of restarting them.

hypercorn's own supervisor answers SIGHUP by stopping every worker and starting new ones, which cuts
streams that outlive its graceful timeout. Here each worker reloads its pipelines in place. The same
parent runs uvicorn workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

_STRAGGLER_GRACE_S = 5.0

# Called in each worker process with the shared shutdown event; `kwargs` must pickle (spawn).
WorkerTarget = Callable[..., Any]


def run_workers(target: WorkerTarget, each: list[dict[str, Any]], graceful_s: float) -> int:
    """One worker per entry of `each`, called with those keyword arguments (its own listening socket)."""
    context = get_context("spawn")
    shutdown = context.Event()
    # Inherited by the workers: a Ctrl-C reaches the parent, which stops them in order, and a SIGHUP
    # that arrives before a worker's app has installed its reload handler cannot kill it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    processes: list[BaseProcess] = []
    for kwargs in each:
        process: BaseProcess = context.Process(target=target, kwargs={**kwargs, "shutdown_event": shutdown})
        process.start()
        processes.append(process)
    _supervise(processes)
    # A worker that died takes the others down: systemd restarts the whole service cleanly.
    shutdown.set()
    for process in processes:
        process.join(graceful_s + _STRAGGLER_GRACE_S)
        if process.is_alive():
            process.terminate()
            process.join()
    return max((abs(process.exitcode or 0) for process in processes), default=0)


def _supervise(processes: list[BaseProcess]) -> None:
    """Forward SIGHUP until a stop signal comes or a worker ends.

    The handlers only note the signal and wake the loop through a pipe: doing the work inside a
    handler could re-enter a lock the main flow holds (multiprocessing's Event.set) and deadlock.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(wake_write, b"!")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, note)
    sentinels = [process.sentinel for process in processes]
    try:
        while True:
            ready = wait([*sentinels, wake_read])
            if wake_read in ready:
                os.read(wake_read, 1024)
            while received:
                if received.pop(0) != signal.SIGHUP:
                    return
                _forward_reload(processes)
            if any(sentinel in ready for sentinel in sentinels):
                return
    finally:
        # Shutdown has begun: a second Ctrl-C, TERM or reload while the workers finish must not run
        # `note` on the closed pipe (EBADF would unwind the parent before it stops stragglers).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        os.close(wake_read)
        os.close(wake_write)


def _forward_reload(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGHUP)


def watch_shutdown(shutdown_event: Event, stop: Callable[[], None]) -> None:
    """In a worker: call `stop` (from a thread) once the parent sets the shutdown event."""
    import threading

    def wait_and_stop() -> None:
        shutdown_event.wait()
        stop()

    threading.Thread(target=wait_and_stop, name="citadel-shutdown-watch", daemon=True).start()
