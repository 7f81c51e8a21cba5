"""Several hypercorn workers under one parent that forwards SIGHUP instead of restarting them.

hypercorn's own supervisor answers SIGHUP by stopping every worker and starting new ones, which cuts
streams that outlive its graceful timeout. Here each worker reloads its pipelines in place.
"""

from __future__ import annotations

import contextlib
import os
import signal
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from hypercorn.config import Config as HypercornConfig

_STRAGGLER_GRACE_S = 5.0


def _worker_func(config: HypercornConfig) -> Any:
    if config.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker

        return uvloop_worker
    from hypercorn.asyncio.run import asyncio_worker

    return asyncio_worker


def run_workers(config: HypercornConfig, workers: int) -> int:
    sockets = config.create_sockets()
    context = get_context("spawn")
    shutdown = context.Event()
    worker = _worker_func(config)
    # Workers inherit an ignored SIGINT: a Ctrl-C reaches the parent, which stops them in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes: list[BaseProcess] = []
    for _ in range(workers):
        process: BaseProcess = context.Process(
            target=worker, kwargs={"config": config, "shutdown_event": shutdown, "sockets": sockets}
        )
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
    deadline = config.graceful_timeout + _STRAGGLER_GRACE_S
    for process in processes:
        process.join(deadline)
        if process.is_alive():
            process.terminate()
            process.join()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.close()
    return max((abs(process.exitcode or 0) for process in processes), default=0)
