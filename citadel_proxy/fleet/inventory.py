"""What each backend holds, read from Ollama itself (/api/tags, /api/ps); the read is also its probe."""

from __future__ import annotations

import asyncio
import time

from citadel_proxy import errors
from citadel_proxy.fleet.backend import Backend
from citadel_proxy.management import ollama
from citadel_proxy.management.names import canonical


async def refresh(backend: Backend, timeout_s: float) -> bool:
    """Read the backend's models; a failure counts against its breaker, an answer for it."""
    started = time.perf_counter()
    try:
        tags, running = await asyncio.gather(
            ollama.tags(backend.client, timeout_s), ollama.running(backend.client, timeout_s)
        )
    except errors.GatewayError as exc:
        backend.saw_error(f"inventory: {exc.message}")
        backend.breaker.failed()
        return False
    backend.saw_latency(time.perf_counter() - started)
    backend.installed = frozenset(canonical(m.name) for m in tags)
    backend.loaded = {canonical(m.name): m.size_vram or 0 for m in running}
    backend.inventory_at = time.time()
    if backend.breaker.state != "closed" and backend.breaker.enter():
        backend.breaker.succeeded()  # the probe took the trial and passed it
    return True
