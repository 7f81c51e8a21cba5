"""SIGHUP re-reads the config and `pipelines/`: new requests get the new pipelines, requests in flight keep
theirs. The main config is checked too, so a broken edit is reported at once (log and metric), not at the
next restart; its settings other than the pipelines take effect on restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from citadel_proxy.config import ConfigError, load_config
from citadel_proxy.config.schema import Config
from citadel_proxy.pipeline import table
from citadel_proxy.pipeline.spec import PipelineSet
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.services import Services

_log = logging.getLogger("citadel_proxy.reload")


async def reload_pipelines(
    services: Services,
    load: Callable[[], PipelineSet],
    terminal: Handler,
    config_file: Path | None = None,
) -> bool:
    """Check the main config, then load and build every pipeline file; install them only if all of
    them are valid. The outcome is counted in `citadel_config_reloads_total`."""
    metrics = services.metrics
    try:
        if config_file is not None:
            changed = await asyncio.to_thread(_changed_sections, services.config, config_file)
            if changed:
                _log.warning(
                    "%s: changes to %s take effect when the gateway restarts", config_file, ", ".join(changed)
                )
        pipelines = await asyncio.to_thread(load)
        built = table.build(pipelines, services, terminal)
    except ConfigError as exc:
        _log.error("config not reloaded, the previous config and pipelines stay in force: %s", exc)
        metrics.config_reloads.labels("failed").inc()
        metrics.config_reload_ok.set(0.0)
        return False
    services.pipelines.install(built)
    metrics.config_reloads.labels("ok").inc()
    metrics.config_reload_ok.set(1.0)
    _log.warning("pipelines reloaded: %s", ", ".join(p.name for p in pipelines.all))
    return True


def _changed_sections(running: Config, config_file: Path) -> list[str]:
    """The top-level sections of the file that differ from the running config (raises ConfigError)."""
    fresh = load_config(config_file)
    return [name for name in running.__struct_fields__ if getattr(fresh, name) != getattr(running, name)]


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
