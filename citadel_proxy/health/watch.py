"""Whether Ollama answers, kept current without anyone calling /health: a background probe every
`monitoring.health_checks.interval` and the outcome of real traffic both feed `citadel_upstream_up`, and
each change (not each check) is logged once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from citadel_proxy import errors
from citadel_proxy.config.schema import HealthChecks
from citadel_proxy.observability.metrics import Metrics
from citadel_proxy.upstream.client import OllamaClient

log = logging.getLogger(__name__)


class UpstreamWatch:
    """The last thing known of Ollama: reached (True), not reached (False) or not yet asked (None)."""

    def __init__(self, metrics: Metrics, base_url: str) -> None:
        self._metrics = metrics
        self._base_url = base_url
        self._up: bool | None = None
        self._down_since = 0.0

    @property
    def up(self) -> bool | None:
        return self._up

    def observe(self, up: bool, why: str = "") -> None:
        """Called on every exchange with Ollama, so the unchanged case is one comparison."""
        if up is self._up:
            return
        before, self._up = self._up, up
        self._metrics.set_upstream_up(up)
        if not up:
            self._down_since = time.monotonic()
            when = "at start" if before is None else "now"
            log.warning(
                "Ollama at %s is unreachable %s (%s); requests that need it fail until it answers",
                self._base_url, when, why or "no answer",
            )  # fmt: skip
        elif before is False:
            down_s = time.monotonic() - self._down_since
            log.info("Ollama at %s answers again, after %.0f s unreachable", self._base_url, down_s)

    async def probe(self, upstream: OllamaClient, timeout_s: float) -> None:
        """One health check: Ollama's `/api/version`, as `GET /health` asks it."""
        try:
            await upstream.fetch("GET", "/api/version", total_s=timeout_s)
        except errors.GatewayError as exc:
            self.observe(False, exc.detail or exc.message)
        else:
            self.observe(True)


async def watch_in_background(
    watch: UpstreamWatch, upstream: OllamaClient, settings: HealthChecks, stack: contextlib.AsyncExitStack
) -> None:
    """Probe now and every `settings.interval` until the lifespan ends (not at all when disabled)."""
    if not settings.enabled:
        return

    async def probe_forever() -> None:
        while True:
            await watch.probe(upstream, min(settings.timeout_s, settings.interval))
            await asyncio.sleep(settings.interval)

    task = asyncio.create_task(probe_forever(), name="upstream-health")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
