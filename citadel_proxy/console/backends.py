"""The Overview's backends panel: every Ollama of the fleet, each from the probe behind
/management/system/ollama-status."""

from __future__ import annotations

import asyncio

import msgspec

from citadel_proxy.management.status import ollama_status
from citadel_proxy.management.wire import LoadedModel
from citadel_proxy.services import Services


class BackendState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    base_url: str
    healthy: bool
    version: str | None
    latency_ms: float | None
    loaded_models: list[LoadedModel]
    vram_bytes: int
    error: str | None


async def backend_states(services: Services) -> list[BackendState]:
    """One state per backend (the one-server form is the backend `default`), probed together."""
    backends = services.fleet.backends
    reports = await asyncio.gather(*(ollama_status(backend.client) for backend in backends))
    return [
        BackendState(
            name=backend.name,
            kind="ollama",
            base_url=status.base_url,
            healthy=status.reachable and status.error is None and backend.breaker.available(),
            version=status.version,
            latency_ms=status.latency_ms,
            loaded_models=status.loaded_models,
            vram_bytes=sum(m.size_vram for m in status.loaded_models),
            error=status.error,
        )
        for backend, status in zip(backends, reports, strict=True)
    ]
