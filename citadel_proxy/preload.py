"""Models marked `preload: true` in `ollama.models[]` are loaded into Ollama when the gateway starts.

An empty generate request loads a model without generating (Ollama's documented way); it is sent with
the model's configured num_ctx and keep_alive, since Ollama reloads a model whose num_ctx changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from citadel_proxy import errors
from citadel_proxy.config.schema import Config, ModelEntry
from citadel_proxy.upstream.client import OllamaClient

_log = logging.getLogger("citadel_proxy.preload")
# Loading a large model from a slow disk takes minutes; past this the gateway stops waiting (Ollama goes on).
PRELOAD_TIMEOUT_S = 600.0


async def preload_models(config: Config, client: OllamaClient, stack: contextlib.AsyncExitStack) -> None:
    """Starts the loads in the background (the gateway serves meanwhile); they stop when `stack` closes."""
    entries = [m for m in config.ollama.models if m.preload and m.active]
    if not entries:
        return
    task = asyncio.create_task(_preload(entries, client), name="preload models")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)


async def _preload(entries: list[ModelEntry], client: OllamaClient) -> None:
    for entry in entries:
        body: dict[str, object] = {"model": entry.name, "prompt": "", "stream": False}
        if entry.keep_alive is not None:
            body["keep_alive"] = entry.keep_alive
        if entry.num_ctx is not None:
            body["options"] = {"num_ctx": entry.num_ctx}
        try:
            await client.fetch("POST", "/api/generate", msgspec.json.encode(body), total_s=PRELOAD_TIMEOUT_S)
        except errors.GatewayError as exc:
            _log.warning("could not preload model %s: %s", entry.name, exc.message)
        else:
            _log.info("preloaded model %s", entry.name)
