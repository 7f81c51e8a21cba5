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


def run_workers(target: WorkerTarget, kwargs: dict[str, Any], workers: int, graceful_s: float) -> int:
    context = get_context("spawn")
    shutdown = context.Event()
    # Workers inherit an ignored SIGINT: a Ctrl-C reaches the parent, which stops them in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes: list[BaseProcess] = []
    for _ in range(workers):
        process: BaseProcess = context.Process(target=target, kwargs={**kwargs, "shutdown_event": shutdown})
        process.start()
        processes.append(process)

    def stop(*_: object) -> None:
        shutdown.set()

    def forward_reload(*_: object) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), stop)
    signal.signal(signal.SIGHUP, forward_reload)
    # A worker that dies takes the others down: systemd restarts the whole service cleanly.
    wait([process.sentinel for process in processes])
    shutdown.set()
    for process in processes:
        process.join(graceful_s + _STRAGGLER_GRACE_S)
        if process.is_alive():
            process.terminate()
            process.join()
    return max((abs(process.exitcode or 0) for process in processes), default=0)


def watch_shutdown(shutdown_event: Event, stop: Callable[[], None]) -> None:
    """In a worker: call `stop` (from a thread) once the parent sets the shutdown event."""
    import threading

    def wait_and_stop() -> None:
        shutdown_event.wait()
        stop()

    threading.Thread(target=wait_and_stop, name="citadel-shutdown-watch", daemon=True).start()
