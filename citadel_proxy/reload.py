"""SIGHUP re-reads `pipelines/`: new requests get the new pipelines, requests in flight keep theirs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from citadel_proxy.config import ConfigError
from citadel_proxy.pipeline import table
from citadel_proxy.pipeline.spec import PipelineSet
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.services import Services

_log = logging.getLogger("citadel_proxy.reload")


async def reload_pipelines(services: Services, load: Callable[[], PipelineSet], terminal: Handler) -> bool:
    """Load and build every pipeline file; install them only if all of them are valid."""
    try:
        pipelines = await asyncio.to_thread(load)
        built = table.build(pipelines, services, terminal)
    except ConfigError as exc:
        _log.error("pipelines not reloaded, the previous ones stay in force: %s", exc)
        return False
    services.pipelines.install(built)
    _log.warning("pipelines reloaded: %s", ", ".join(p.name for p in pipelines.all))
    return True


@contextlib.contextmanager
def reload_on_sighup(reload: Callable[[], Coroutine[Any, Any, object]]) -> Iterator[None]:
    """Call `reload` on SIGHUP while the block runs (only possible in the main thread's loop)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()

    def on_signal() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_signal)
    except (RuntimeError, ValueError, NotImplementedError):
        # Not the main thread (an embedding server, a test harness): reloads are then its business.
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        # Not back to the default action, which would end the process mid-shutdown.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
