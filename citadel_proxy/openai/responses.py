"""OpenAI response objects for whole answers (chat.completion, text_completion, model list)."""

from __future__ import annotations

from typing import Literal

import msgspec

from citadel_proxy.entropy import random_bytes
from citadel_proxy.pipeline.types import Completion, ToolCall


class FunctionOut(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, frozen=True):
    id: str
    function: FunctionOut
    type: str = "function"


class AssistantMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    # No default, so omit_defaults never drops it: OpenAI's types (and LangChain) require the role.
    role: Literal["assistant"]
    content: str | None
    reasoning: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(msgspec.Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class TextChoice(msgspec.Struct, frozen=True):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"
    system_fingerprint: str = "fp_ollama"


class TextCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    object: str = "text_completion"
    system_fingerprint: str = "fp_ollama"


def new_id(prefix: str) -> str:
    """Ids unique across requests (Ollama's own `chatcmpl-<0..998>` repeat)."""
    return f"{prefix}-{random_bytes(12).hex()}"


def finish_reason(done_reason: str | None, used_tools: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if used_tools else "stop"


def tool_calls_out(calls: list[ToolCall]) -> list[ToolCallOut]:
    return [
        ToolCallOut(
            id=call.id or new_id("call"),
            function=FunctionOut(name=call.function.name, arguments=bytes(call.function.arguments).decode()),
        )
        for call in calls
    ]


def usage_of(completion: Completion) -> Usage:
    p, c = completion.prompt_tokens, completion.completion_tokens
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def chat_completion(completion: Completion, model: str, created: int) -> ChatCompletion:
    message = AssistantMessage(
        role="assistant",
        content=completion.content,
        reasoning=completion.thinking or None,
        tool_calls=tool_calls_out(completion.tool_calls) or None,
    )
    reason = finish_reason(completion.finish_reason, bool(completion.tool_calls))
    choice = ChatChoice(index=0, message=message, finish_reason=reason)
    return ChatCompletion(
        id=new_id("chatcmpl"), created=created, model=model, choices=[choice], usage=usage_of(completion)
    )


def text_completion(completion: Completion, model: str, created: int) -> TextCompletion:
    reason = finish_reason(completion.finish_reason, False)
    choice = TextChoice(index=0, text=completion.content, finish_reason=reason)
    return TextCompletion(
        id=new_id("cmpl"), created=created, model=model, choices=[choice], usage=usage_of(completion)
    )
