"""Server-Sent Events in OpenAI's chunk formats, built from preencoded byte templates.

Per delta the only work is one msgspec encode of the new text and a few concatenations: this is the
hot path of every stream.
"""

from __future__ import annotations

import msgspec

from citadel_proxy import errors
from citadel_proxy.http.stream_encoder import SSE_HEADERS
from citadel_proxy.openai.responses import finish_reason, new_id, tool_calls_out
from citadel_proxy.pipeline.types import Delta, Outcome, ToolCall

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

_encode = msgspec.json.Encoder().encode


class _OpenAIEvents:
    """What OpenAI's two chunk formats share: SSE, comments as keep-alives, OpenAI's error object."""

    __slots__ = ()

    headers = SSE_HEADERS
    keepalive = KEEPALIVE

    def error_event(self, error: errors.GatewayError) -> bytes:
        return errors.sse_error_event(error)

    def error_body(self, error: errors.GatewayError) -> bytes:
        return error.to_json()


def _usage(outcome: Outcome) -> bytes:
    p, c = outcome.prompt_tokens, outcome.completion_tokens
    return b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (p, c, p + c)


# What follows the id, model and fingerprint in a chunk; an encoder keeps only the head with it, and the
# usage chunk (the head without it) is cut from that at the end: an open stream holds one copy, not two.
_CHAT_CHOICES = b'"choices":[{"index":0,"delta":{'
_TEXT_CHOICES = b'"choices":[{"index":0,"text":'


class ChatChunks(_OpenAIEvents):
    """`chat.completion.chunk` events: role in the first delta, a finish chunk, optional usage, [DONE]."""

    __slots__ = ("_head", "_open", "_tail", "_tool_index", "_used_tools")

    def __init__(self, model: str, created: int) -> None:
        common = b'{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,' % (
            new_id("chatcmpl").encode(),
            created,
            _encode(model),
        )
        self._head = b"data: " + common + b'"system_fingerprint":"fp_ollama",' + _CHAT_CHOICES
        self._open = self._head + b'"role":"assistant",'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._tool_index = 0
        self._used_tools = False

    def encode(self, batch: list[Delta]) -> bytes:
        out = []
        for delta in batch:
            if delta.thinking:
                out.append(b"".join((self._open, b'"reasoning":', _encode(delta.thinking), self._tail)))
                self._open = self._head
            if delta.content or not (delta.thinking or delta.tool_calls):
                out.append(b"".join((self._open, b'"content":', _encode(delta.content), self._tail)))
                self._open = self._head
            if delta.tool_calls:
                calls = self._tool_calls(delta.tool_calls)
                out.append(b"".join((self._open, b'"tool_calls":', calls, self._tail)))
                self._open = self._head
        return b"".join(out)

    def _tool_calls(self, calls: list[ToolCall]) -> bytes:
        self._used_tools = True
        items = []
        for call in tool_calls_out(calls):
            items.append(
                {"index": self._tool_index, "id": call.id, "type": "function", "function": call.function}
            )
            self._tool_index += 1
        return _encode(items)

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        reason = finish_reason(outcome.finish_reason, self._used_tools).encode()
        out = self._open + b'},"logprobs":null,"finish_reason":"' + reason + b'"}]}\n\n'
        if include_usage:
            common = self._head[: -len(_CHAT_CHOICES)]
            out += common + b'"choices":[],"usage":' + _usage(outcome) + b"}\n\n"
        return out + DONE


class TextChunks(_OpenAIEvents):
    """`text_completion` events (the legacy completions API, used by copilot-style clients)."""

    __slots__ = ("_head", "_tail")

    def __init__(self, model: str, created: int) -> None:
        common = b'{"id":"%s","object":"text_completion","created":%d,"model":%s,' % (
            new_id("cmpl").encode(),
            created,
            _encode(model),
        )
        self._head = b"data: " + common + b'"system_fingerprint":"fp_ollama",' + _TEXT_CHOICES
        self._tail = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def encode(self, batch: list[Delta]) -> bytes:
        # Thinking is not part of a completion's text, and tool calls do not exist in this API.
        out = [b"".join((self._head, _encode(d.content), self._tail)) for d in batch if d.content]
        return b"".join(out)

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        reason = finish_reason(outcome.finish_reason, False).encode()
        out = self._head + b'"","logprobs":null,"finish_reason":"' + reason + b'"}]}\n\n'
        if include_usage:
            common = self._head[: -len(_TEXT_CHOICES)]
            out += common + b'"choices":[],"usage":' + _usage(outcome) + b"}\n\n"
        return out + DONE
