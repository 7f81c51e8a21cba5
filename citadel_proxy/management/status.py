"""`ollama-status`: is Ollama reachable, which version, how fast, what is loaded. Never an error itself."""

from __future__ import annotations

import time

from citadel_proxy import errors
from citadel_proxy.health.probes import elapsed_ms
from citadel_proxy.management import ollama
from citadel_proxy.management.wire import LoadedModel, OllamaStatus
from citadel_proxy.upstream.client import OllamaClient

# A status probe answers quickly or reports Ollama as unreachable; monitoring polls it.
STATUS_TIMEOUT_S = 5.0


async def ollama_status(client: OllamaClient) -> OllamaStatus:
    base_url = client.service.base_url
    started = time.perf_counter()
    try:
        version = await ollama.version(client, STATUS_TIMEOUT_S)
    except errors.GatewayError as exc:
        return OllamaStatus(
            reachable=False,
            base_url=base_url,
            version=None,
            latency_ms=None,
            loaded_models=[],
            error=exc.detail or exc.message,
        )
    latency_ms = elapsed_ms(started)
    loaded: list[LoadedModel] = []
    error = None
    try:
        loaded = [ollama.loaded(m) for m in await ollama.running(client, STATUS_TIMEOUT_S)]
    except errors.GatewayError as exc:
        error = f"cannot list the loaded models: {exc.message}"
    return OllamaStatus(
        reachable=True,
        base_url=base_url,
        version=version,
        latency_ms=latency_ms,
        loaded_models=loaded,
        error=error,
    )
