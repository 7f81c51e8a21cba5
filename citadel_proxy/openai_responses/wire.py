"""The body of `POST /v1/responses` (the fields the gateway reads; others are accepted and ignored)."""

from __future__ import annotations

from typing import Any

import msgspec


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    # input_text, output_text, input_image, refusal, …
    type: str
    text: str | None = None
    image_url: str | None = None
    refusal: str | None = None


class InputItem(msgspec.Struct, frozen=True, kw_only=True):
    """A message (`type` "message" or absent), a `function_call` or a `function_call_output`, …"""

    type: str | None = None
    role: str | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class FunctionTool(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, frozen=True, kw_only=True):
    type: str = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, frozen=True, kw_only=True):
    format: TextFormat | None = None


class Reasoning(msgspec.Struct, frozen=True, kw_only=True):
    effort: str | None = None


class ResponsesBody(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    input: str | list[InputItem] = ""
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool | None = None
    # Stored state: the gateway keeps none, and says so (400) when asked for it.
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
