"""Ollama's native API as typed structs."""

from __future__ import annotations

from typing import Any

import msgspec

from citadel_proxy.pipeline.request import KeepAlive
from citadel_proxy.pipeline.types import Delta, ToolCall


class OllamaMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str
    content: str = ""
    thinking: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class OllamaOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


class OllamaChatRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    model: str
    messages: list[OllamaMessage]
    stream: bool = True
    tools: msgspec.Raw | None = None
    format: msgspec.Raw | None = None
    options: OllamaOptions | dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: KeepAlive = None


class OllamaGenerateRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    model: str
    prompt: str
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool | None = None
    images: list[str] | None = None
    stream: bool = True
    format: msgspec.Raw | None = None
    options: OllamaOptions | dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: KeepAlive = None


class _Line(msgspec.Struct, frozen=True):
    """What every line of a chat or generate stream may carry: the end, its counts, or an error.
    Zero fields are omitted by Ollama."""

    done: bool = False
    done_reason: str = ""
    prompt_eval_count: int = 0
    eval_count: int = 0
    error: str | None = None


class ChatLine(_Line, frozen=True):
    """One line of an /api/chat stream, or its whole non-stream answer."""

    # Decoded straight into a Delta (its `role` is ignored): no per-token conversion.
    message: Delta | None = None


class GenerateLine(_Line, frozen=True):
    """One line of an /api/generate stream, or its whole non-stream answer."""

    response: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] | None = None


class ErrorReply(msgspec.Struct, frozen=True):
    error: str = ""
