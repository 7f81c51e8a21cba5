"""Pure functions from the pipeline's request to Ollama's wire format, called right before the call."""

from __future__ import annotations

from typing import Any

from citadel_proxy.embeddings.wire import UpstreamEmbed, UpstreamEmbeddings
from citadel_proxy.pipeline.options import options_to_map
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options
from citadel_proxy.upstream.wire import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessage,
    OllamaOptions,
)


def chat_to_ollama(request: InferenceRequest) -> OllamaChatRequest:
    return OllamaChatRequest(
        model=request.model,
        messages=[_message(m) for m in request.messages or ()],
        stream=request.stream,
        tools=request.tools,
        format=request.format,
        options=_options(request.options),
        think=request.think,
        keep_alive=request.keep_alive,
    )


def generate_to_ollama(request: InferenceRequest) -> OllamaGenerateRequest:
    return OllamaGenerateRequest(
        model=request.model,
        prompt=request.prompt,
        suffix=request.suffix,
        system=request.system,
        template=request.template,
        raw=request.raw,
        images=request.images,
        stream=request.stream,
        format=request.format,
        options=_options(request.options),
        think=request.think,
        keep_alive=request.keep_alive,
    )


def embed_to_ollama(request: InferenceRequest) -> UpstreamEmbed:
    """/api/embed, for the request's inputs (a cache stage may have narrowed them to its misses)."""
    return UpstreamEmbed(
        model=request.model,
        input=request.input or None,
        truncate=request.truncate,
        dimensions=request.dimensions,
        options=_option_map(request.options),
        keep_alive=request.keep_alive,
    )


def embeddings_to_ollama(request: InferenceRequest, text: str) -> UpstreamEmbeddings:
    """The older /api/embeddings, one text a call: the only one whose vectors are not normalised."""
    return UpstreamEmbeddings(
        model=request.model, prompt=text, options=_option_map(request.options), keep_alive=request.keep_alive
    )


def _message(message: Message) -> OllamaMessage:
    return OllamaMessage(
        role=message.role,
        content=message.content,
        thinking=message.thinking,
        images=message.images,
        tool_calls=message.tool_calls,
        tool_name=message.tool_name,
        tool_call_id=message.tool_call_id,
    )


def _options(options: Options | None) -> OllamaOptions | dict[str, Any] | None:
    if options is None:
        return None
    if options.extra:
        return _option_map(options)
    return OllamaOptions(
        num_predict=options.num_predict,
        temperature=options.temperature,
        top_p=options.top_p,
        seed=options.seed,
        stop=options.stop,
        frequency_penalty=options.frequency_penalty,
        presence_penalty=options.presence_penalty,
    )


def _option_map(options: Options | None) -> dict[str, Any] | None:
    """Free-form runner settings, with the named ones over them."""
    return options_to_map(options) or None
