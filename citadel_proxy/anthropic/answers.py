"""Answers in Anthropic's shapes: a whole `message`, its SSE event sequence, and its error object."""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.anthropic.wire import (
    ErrorDetail,
    ErrorOut,
    MessageOut,
    TextOut,
    ThinkingOut,
    ToolUseOut,
    Usage,
)
from citadel_proxy.entropy import random_bytes
from citadel_proxy.http.stream_encoder import SSE_HEADERS
from citadel_proxy.openai.sse import KEEPALIVE
from citadel_proxy.pipeline.types import Completion, Context, Delta, Outcome, ToolCall

_encode = msgspec.json.Encoder().encode
# Anthropic's error types by HTTP status (anything else is an api_error).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(error: errors.GatewayError) -> bytes:
    kind = _ERROR_TYPES.get(error.status, "api_error")
    return _encode(ErrorOut(ErrorDetail(kind, error.message)))


def new_message_id() -> str:
    return "msg_" + random_bytes(12).hex()


def stop_reason(done_reason: str | None, used_tools: bool) -> str:
    if used_tools:
        return "tool_use"
    return "max_tokens" if done_reason == "length" else "end_turn"


def _tool_use(call: ToolCall) -> ToolUseOut:
    return ToolUseOut(
        id=call.id or "toolu_" + random_bytes(12).hex(),
        name=call.function.name,
        input=call.function.arguments,
    )


def message(ctx: Context, completion: Completion) -> bytes:
    content: list[TextOut | ThinkingOut | ToolUseOut] = []
    if completion.thinking:
        content.append(ThinkingOut(completion.thinking))
    if completion.content or not completion.tool_calls:
        content.append(TextOut(completion.content))
    content += [_tool_use(call) for call in completion.tool_calls]
    return _encode(
        MessageOut(
            id=new_message_id(),
            role="assistant",
            model=ctx.model_requested,
            content=content,
            stop_reason=stop_reason(completion.finish_reason, bool(completion.tool_calls)),
            stop_sequence=None,
            usage=Usage(completion.prompt_tokens, completion.completion_tokens),
        )
    )


def _event(name: bytes, data: object) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(data) + b"\n\n"


class MessageEvents:
    """message_start, ping, then content blocks (thinking, text, tool_use) opened, filled by deltas and
    closed as the kind of output changes, then message_delta (stop_reason, usage) and message_stop."""

    headers = SSE_HEADERS
    keepalive = KEEPALIVE

    def __init__(self, ctx: Context) -> None:
        self._model = ctx.model_requested
        self._started = False
        self._index = -1
        self._open: str | None = None  # the type of the block being filled
        self._used_tools = False

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        start: dict[str, object] = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            _event(b"message_start", {"type": "message_start", "message": start}),
            _event(b"ping", {"type": "ping"}),
        ]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _block(self, kind: str, block: dict[str, object]) -> list[bytes]:
        if self._open == kind:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return [*out, _event(b"content_block_start", start)]

    def _delta(self, delta: dict[str, object]) -> bytes:
        return _event(
            b"content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def encode(self, batch: list[Delta]) -> bytes:
        out = self._start()
        for delta in batch:
            if delta.thinking:
                out += self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": delta.thinking}))
            if delta.content:
                out += self._block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta.content}))
            for call in delta.tool_calls or ():
                out += self._tool(call)
        return b"".join(out)

    def _tool(self, call: ToolCall) -> list[bytes]:
        self._used_tools = True
        use = _tool_use(call)
        out = self._block("tool_use", {"type": "tool_use", "id": use.id, "name": use.name, "input": {}})
        arguments = bytes(call.function.arguments).decode()
        out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out + self._close()

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        out = self._start()
        if self._index < 0:  # no output at all: one empty text block, as Anthropic sends
            out += self._block("text", {"type": "text", "text": ""})
        out += self._close()
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(outcome.finish_reason, self._used_tools),
                "stop_sequence": None,
            },
            "usage": {"input_tokens": outcome.prompt_tokens, "output_tokens": outcome.completion_tokens},
        }
        out += [_event(b"message_delta", delta), _event(b"message_stop", {"type": "message_stop"})]
        return b"".join(out)

    def error_event(self, error: errors.GatewayError) -> bytes:
        return b"event: error\ndata: " + error_body(error) + b"\n\n"

    def error_body(self, error: errors.GatewayError) -> bytes:
        return error_body(error)
