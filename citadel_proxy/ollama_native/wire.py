"""The bodies Ollama's clients send (/api/chat, /api/generate, /api/show, /api/pull, /api/delete)."""

from __future__ import annotations

from typing import Any

import msgspec

from citadel_proxy.pipeline.types import ToolCall

KeepAlive = int | float | str | None


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class _Common(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    # Absent: Ollama streams, and so does the pipeline unless its file says otherwise.
    stream: bool | None = None
    # "json" or a JSON schema.
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: KeepAlive = None


class ChatBody(_Common, frozen=True, kw_only=True):
    messages: list[ChatMessage] = msgspec.field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Common, frozen=True, kw_only=True):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool | None = None
    images: list[str] | None = None
    # The deprecated token context of an earlier answer: the gateway keeps no state to continue from.
    context: list[int] | None = None


class ModelBody(msgspec.Struct, frozen=True, kw_only=True):
    """/api/show, /api/pull and /api/delete; older clients send `name`."""

    model: str = ""
    name: str = ""
    verbose: bool | None = None
    stream: bool | None = None
    insecure: bool | None = None

    def model_name(self) -> str:
        return self.model or self.name


# -- answers


class AnswerMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    # No defaults: omit_defaults would leave them out, and Ollama's clients require both.
    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    created_at: str
    message: AnswerMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    created_at: str
    response: str
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class Error(msgspec.Struct, frozen=True):
    error: str
