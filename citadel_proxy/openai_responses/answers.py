"""Answers in the Responses API's shapes: a whole `response` object, and its event stream.

A stream's `response.completed` repeats every output item with the ids its events used (the SDKs check
this), so the encoder keeps the items it has opened, text included, until the end.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from citadel_proxy import errors
from citadel_proxy.entropy import random_bytes
from citadel_proxy.http.stream_encoder import SSE_HEADERS
from citadel_proxy.openai.sse import KEEPALIVE
from citadel_proxy.pipeline.types import Completion, Context, Delta, Outcome, ToolCall

_encode = msgspec.json.Encoder().encode
Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_bytes(12).hex()}"


def _reasoning(item_id: str, text: str) -> Item:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def _text_part(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, text: str, status: str) -> Item:
    content = [_text_part(text)] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _function_call(item_id: str, call: ToolCall, arguments: str, status: str) -> Item:
    call_id = call.id or new_id("call")
    return {
        "type": "function_call", "id": item_id, "call_id": call_id, "name": call.function.name,
        "arguments": arguments, "status": status,
    }  # fmt: skip


def response_object(
    ctx: Context, response_id: str, created: int, output: list[Item], outcome: Outcome | None
) -> Item:
    """The `response` object; `outcome` None: still in progress."""
    body = ctx.request
    status, incomplete, usage = "in_progress", None, None
    if outcome is not None:
        status = "incomplete" if outcome.finish_reason == "length" else "completed"
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        p, c = outcome.prompt_tokens, outcome.completion_tokens
        usage = {
            "input_tokens": p, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c,
        }  # fmt: skip
    options = body.options
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "model": ctx.model_requested, "output": output, "usage": usage, "error": None,
        "incomplete_details": incomplete, "instructions": None, "metadata": {},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "store": False,
        "temperature": options.temperature if options else None, "top_p": options.top_p if options else None,
        "text": {"format": {"type": "text"}},
    }  # fmt: skip


def answer(ctx: Context, completion: Completion) -> bytes:
    output: list[Item] = []
    if completion.thinking:
        output.append(_reasoning(new_id("rs"), completion.thinking))
    if completion.content or not completion.tool_calls:
        output.append(_message(new_id("msg"), completion.content, "completed"))
    for call in completion.tool_calls:
        arguments = bytes(call.function.arguments).decode()
        output.append(_function_call(new_id("fc"), call, arguments, "completed"))
    outcome = Outcome(finish_reason=completion.finish_reason)
    outcome.prompt_tokens, outcome.completion_tokens = completion.prompt_tokens, completion.completion_tokens
    return _encode(response_object(ctx, new_id("resp"), int(time.time()), output, outcome))


class ResponseEvents:
    """response.created and .in_progress; per output item .output_item.added, its deltas, its .done
    events and .output_item.done; then response.completed (or .incomplete) with every item."""

    headers = SSE_HEADERS
    keepalive = KEEPALIVE

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._id = new_id("resp")
        self._created = int(time.time())
        self._sequence = 0
        self._started = False
        self._items: list[Item] = []
        self._open: str | None = None  # "reasoning" or "message": the item taking deltas
        self._text: list[str] = []

    def _event(self, kind: str, data: Item) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n"

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        response = response_object(self._ctx, self._id, self._created, [], None)
        return [
            self._event("response.created", {"response": response}),
            self._event("response.in_progress", {"response": response}),
        ]

    def _where(self) -> Item:
        return {"item_id": self._items[-1]["id"], "output_index": len(self._items) - 1}

    def _open_item(self, kind: str) -> list[bytes]:
        if self._open == kind:
            return []
        out = self._close()
        self._open = kind
        if kind == "reasoning":
            item = {"type": "reasoning", "id": new_id("rs"), "summary": [], "content": []}
        else:
            item = _message(new_id("msg"), "", "in_progress")
        self._items.append(item)
        out.append(
            self._event("response.output_item.added", {"output_index": len(self._items) - 1, "item": item})
        )
        if kind == "message":
            out.append(
                self._event(
                    "response.content_part.added",
                    {**self._where(), "content_index": 0, "part": _text_part("")},
                )
            )
        return out

    def _close(self) -> list[bytes]:
        kind, self._open = self._open, None
        if kind is None:
            return []
        text, self._text = "".join(self._text), []
        where, index = self._where(), len(self._items) - 1
        if kind == "reasoning":
            self._items[index] = item = _reasoning(where["item_id"], text)
            out = [self._event("response.reasoning_text.done", {**where, "content_index": 0, "text": text})]
        else:
            self._items[index] = item = _message(where["item_id"], text, "completed")
            out = [
                self._event(
                    "response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []}
                ),
                self._event(
                    "response.content_part.done", {**where, "content_index": 0, "part": _text_part(text)}
                ),
            ]
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        return out

    def encode(self, batch: list[Delta]) -> bytes:
        out = self._start()
        for delta in batch:
            if delta.thinking:
                out += self._open_item("reasoning")
                self._text.append(delta.thinking)
                data = {**self._where(), "content_index": 0, "delta": delta.thinking}
                out.append(self._event("response.reasoning_text.delta", data))
            if delta.content:
                out += self._open_item("message")
                self._text.append(delta.content)
                data = {**self._where(), "content_index": 0, "delta": delta.content, "logprobs": []}
                out.append(self._event("response.output_text.delta", data))
            for call in delta.tool_calls or ():
                out += self._call(call)
        return b"".join(out)

    def _call(self, call: ToolCall) -> list[bytes]:
        out = self._close()
        arguments = bytes(call.function.arguments).decode()
        item = _function_call(new_id("fc"), call, "", "in_progress")
        self._items.append(item)
        index = len(self._items) - 1
        out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
        where = self._where()
        out.append(self._event("response.function_call_arguments.delta", {**where, "delta": arguments}))
        done = {**where, "arguments": arguments, "name": call.function.name}
        out.append(self._event("response.function_call_arguments.done", done))
        self._items[index] = item = {**item, "arguments": arguments, "status": "completed"}
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        return out

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        out = self._start() + self._close()
        response = response_object(self._ctx, self._id, self._created, self._items, outcome)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, {"response": response}))
        return b"".join(out)

    def error_event(self, error: errors.GatewayError) -> bytes:
        return self._event("error", {"code": error.code, "message": error.message, "param": error.param})

    def error_body(self, error: errors.GatewayError) -> bytes:
        return error.to_json()
