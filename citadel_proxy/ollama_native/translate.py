"""Pure functions from Ollama's request bodies to the pipeline's own request (pipeline/request.py)."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.ollama_native.wire import ChatBody, ChatMessage, GenerateBody
from citadel_proxy.pipeline.options import options_from_map
from citadel_proxy.pipeline.request import InferenceRequest, Message


def chat_to_request(body: ChatBody, model: str, stream: bool) -> InferenceRequest:
    return InferenceRequest(
        kind="chat",
        model=model,
        stream=stream,
        messages=[_message(m) for m in body.messages],
        tools=_raw(body.tools),
        format=_raw(body.format),
        think=body.think,
        options=options_from_map(body.options),
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
        options=options_from_map(body.options),
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
