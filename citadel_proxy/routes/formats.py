"""Which endpoint serves the routes of a pipeline, by the pipeline's `format` (its wire protocol)."""

from __future__ import annotations

from citadel_proxy.http.front import Endpoint
from citadel_proxy.routes import anthropic_messages, embeddings, inference, ollama_native, openai_responses
from citadel_proxy.routes.protocol import protocol_endpoint

_PROTOCOLS: dict[str, Endpoint] = {
    "ollama-chat": protocol_endpoint(ollama_native.CHAT, "ollama-chat"),
    "ollama-generate": protocol_endpoint(ollama_native.GENERATE, "ollama-generate"),
    "anthropic-messages": protocol_endpoint(anthropic_messages.MESSAGES, "anthropic-messages"),
    "openai-responses": protocol_endpoint(openai_responses.RESPONSES, "openai-responses"),
}


def endpoint_of(format_name: str) -> Endpoint:
    if format_name == "embeddings":
        return embeddings.embeddings_route
    return _PROTOCOLS.get(format_name, inference.pipeline_route)


def is_fast(format_name: str) -> bool:
    """Served by http.front's short way in (inference streams); embeddings go through Starlette."""
    return format_name != "embeddings"
