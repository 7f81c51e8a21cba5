"""The request every pipeline carries, in no wire format: routes decode into it, backends translate out of it.

A protocol module (openai/, the embeddings routes) maps its client's body to an `InferenceRequest` at one
edge; the backend module (upstream/) maps it to its server's wire format at the other, right before the
call. Stages in between see only this, so a stage that rewrites prompts, or a second kind of backend,
touches one place.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from citadel_proxy.pipeline.types import ToolCall

Kind = Literal["chat", "generate", "embed"]
KeepAlive = int | float | str | None


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One turn of a conversation; roles are system, user, assistant and tool."""

    role: str
    content: str = ""
    thinking: str = ""
    # Base64 image data, without a data-URL prefix.
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    # A tool result (role tool): the tool that was called, and the call it answers.
    tool_name: str | None = None
    tool_call_id: str | None = None


class Options(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Sampling settings; an unset one leaves the model's own default in force."""

    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # Runner settings a native body names that the gateway passes on untouched (num_ctx, num_gpu, …).
    extra: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One chat, generate or embed request. `model` is the resolved model, the one a backend serves."""

    kind: Kind
    model: str
    stream: bool = False
    # chat
    messages: list[Message] | None = None
    # generate
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool | None = None
    images: list[str] | None = None
    # chat and generate. Tools are function declarations as JSON ([{type, function: {name, description,
    # parameters}}]), kept as the client wrote them; `format` is "json" or a JSON schema.
    tools: msgspec.Raw | None = None
    format: msgspec.Raw | None = None
    think: bool | str | None = None
    # every kind
    options: Options | None = None
    keep_alive: KeepAlive = None
    # embed: the texts, in the caller's order; the reply's embeddings follow it.
    input: list[str] | None = None
    truncate: bool | None = None
    dimensions: int | None = None
    # False: vectors as the model gives them, not scaled to unit length (Ollama's older /api/embeddings).
    normalize: bool = True

    def inputs(self) -> list[str]:
        return self.input or []
