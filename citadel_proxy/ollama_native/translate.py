"""Pure functions from Ollama's request bodies to the pipeline's own request (pipeline/request.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from citadel_proxy import errors
from citadel_proxy.ollama_native.wire import ChatBody, ChatMessage, GenerateBody
from citadel_proxy.pipeline.request import InferenceRequest, Message, Options

# The options the neutral request names (the rate limiter and the audit read them); the rest of a body's
# `options` (num_ctx, top_k, num_gpu, …) travel in `extra`, untouched.
_NAMED = ("num_predict", "temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")


def chat_to_request(body: ChatBody, model: str, stream: bool) -> InferenceRequest:
    return InferenceRequest(
        kind="chat",
        model=model,
        stream=stream,
        messages=[_message(m) for m in body.messages],
        tools=_raw(body.tools),
        format=_raw(body.format),
        think=body.think,
        options=options_of(body.options),
        keep_alive=body.keep_alive,
    )


def generate_to_request(body: GenerateBody, model: str, stream: bool) -> InferenceRequest:
    if body.context:
        raise errors.UnsupportedParameter(
            "context: the gateway keeps no generation state; send the conversation to /api/chat instead",
            param="context",
        )
    return InferenceRequest(
        kind="generate",
        model=model,
        stream=stream,
        prompt=body.prompt,
        suffix=body.suffix,
        system=body.system,
        template=body.template,
        raw=body.raw,
        images=body.images or None,
        format=_raw(body.format),
        think=body.think,
        options=options_of(body.options),
        keep_alive=body.keep_alive,
    )


def _raw(value: object) -> msgspec.Raw | None:
    # Kept as the client wrote them: the backend passes tools and schemas on untouched.
    return None if not value else msgspec.Raw(msgspec.json.encode(value))


def _message(message: ChatMessage) -> Message:
    return Message(
        role=message.role,
        content=message.content or "",
        thinking=message.thinking or "",
        images=message.images or None,
        tool_calls=message.tool_calls or None,
        tool_name=message.tool_name,
        tool_call_id=message.tool_call_id,
    )


def options_of(given: dict[str, Any] | None) -> Options | None:
    if not given:
        return None
    extra = {k: v for k, v in given.items() if k not in _NAMED}
    stop = given.get("stop")
    if not (stop is None or isinstance(stop, str) or _strings(stop)):
        raise errors.InvalidRequest("options.stop: a string or a list of strings", param="options.stop")
    try:
        return Options(
            num_predict=_number(given, "num_predict", int),
            temperature=_number(given, "temperature", float),
            top_p=_number(given, "top_p", float),
            seed=_number(given, "seed", int),
            stop=[stop] if isinstance(stop, str) else stop,
            frequency_penalty=_number(given, "frequency_penalty", float),
            presence_penalty=_number(given, "presence_penalty", float),
            extra=extra or None,
        )
    except (TypeError, ValueError) as exc:
        raise errors.InvalidRequest(f"options: {exc}", param="options") from None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _number(given: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = given.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be an integer")
    return kind(value)
