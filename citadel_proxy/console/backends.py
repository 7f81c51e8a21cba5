"""The Overview's backends panel reads this one function; a fleet of backends will answer it later."""

from __future__ import annotations

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
    """Today: the one Ollama, from the same probe as /management/system/ollama-status."""
    status = await ollama_status(services.upstream)
    return [
        BackendState(
            name="ollama",
            kind="ollama",
            base_url=status.base_url,
            healthy=status.reachable and status.error is None,
            version=status.version,
            latency_ms=status.latency_ms,
            loaded_models=status.loaded_models,
            vram_bytes=sum(m.size_vram for m in status.loaded_models),
            error=status.error,
        )
    ]
