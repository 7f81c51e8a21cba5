"""OpenAI request bodies as typed structs. Unknown fields are accepted, as OpenAI-compatible servers do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


class TextPart(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: str


class ImageURL(msgspec.Struct, frozen=True):
    url: str
    detail: str | None = None


class ImagePart(msgspec.Struct, frozen=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str = "{}"


class ToolCallIn(msgspec.Struct, frozen=True):
    function: FunctionCall
    id: str | None = None
    type: str = "function"


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None


class FunctionDef(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class JsonSchema(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str = "response"
    schema: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, frozen=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


Stop = str | list[str] | None
Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
MaxTokens = Annotated[int, Meta(ge=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]


class SamplingRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What chat and (legacy) completion requests share: the model, streaming and sampling."""

    model: Annotated[str, Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop = None
    seed: int | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    n: int | None = None
    user: str | None = None
    # Read only to be refused when they ask for what Ollama's answers cannot give (openai/refusals.py).
    logit_bias: dict[str, float] | None = None
    # Ollama's runtime settings, passed on: sampling fields OpenAI lacks, the context size, any other
    # option, and how long the model stays loaded.
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    num_ctx: Annotated[int, Meta(ge=1)] | None = None
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None


class ChatRequest(SamplingRequest, frozen=True, kw_only=True, omit_defaults=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: MaxTokens | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    # "auto" and "none" are honoured; forcing a tool is refused, as Ollama cannot (openai/refusals.py).
    tool_choice: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None
    # Read only to be refused when they ask for what Ollama's answers cannot give (openai/refusals.py).
    logprobs: bool | None = None
    top_logprobs: int | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None


class CompletionRequest(SamplingRequest, frozen=True, kw_only=True, omit_defaults=True):
    prompt: str | list[str]
    suffix: str | None = None
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
