"""Answers in Ollama's shapes: a whole chat or generate object, and NDJSON lines for a stream."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec

from citadel_proxy import errors
from citadel_proxy.http.stream_encoder import NDJSON_HEADERS
from citadel_proxy.ollama_native.wire import AnswerMessage, ChatAnswer, Error, GenerateAnswer
from citadel_proxy.pipeline.types import Completion, Context, Delta, Outcome

_encode = msgspec.json.Encoder().encode


def error_body(error: errors.GatewayError) -> bytes:
    """Ollama's error shape, `{"error": "..."}`, on every route of its API."""
    return _encode(Error(error.message))


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _elapsed_ns(ctx: Context) -> int:
    return int((time.perf_counter() - ctx.started) * 1e9)


def chat_answer(ctx: Context, completion: Completion) -> bytes:
    message = AnswerMessage(
        role="assistant",
        content=completion.content,
        thinking=completion.thinking or None,
        tool_calls=completion.tool_calls or None,
    )
    return _encode(
        ChatAnswer(
            model=ctx.model_requested,
            created_at=now(),
            message=message,
            done=True,
            done_reason=completion.finish_reason or "stop",
            total_duration=_elapsed_ns(ctx),
            prompt_eval_count=completion.prompt_tokens,
            eval_count=completion.completion_tokens,
        )
    )


def generate_answer(ctx: Context, completion: Completion) -> bytes:
    return _encode(
        GenerateAnswer(
            model=ctx.model_requested,
            created_at=now(),
            response=completion.content,
            thinking=completion.thinking or None,
            tool_calls=completion.tool_calls or None,
            done=True,
            done_reason=completion.finish_reason or "stop",
            total_duration=_elapsed_ns(ctx),
            prompt_eval_count=completion.prompt_tokens,
            eval_count=completion.completion_tokens,
        )
    )


class _Lines:
    headers = NDJSON_HEADERS
    # Ollama's clients parse every line as JSON: while a model loads, the headers alone are sent.
    keepalive = b""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._model = ctx.model_requested

    def error_event(self, error: errors.GatewayError) -> bytes:
        return error_body(error) + b"\n"

    def error_body(self, error: errors.GatewayError) -> bytes:
        return error_body(error)

    def _totals(self, outcome: Outcome) -> dict[str, object]:
        return {
            "done": True,
            "done_reason": outcome.finish_reason or "stop",
            "total_duration": _elapsed_ns(self._ctx),
            "prompt_eval_count": outcome.prompt_tokens,
            "eval_count": outcome.completion_tokens,
        }


class ChatLines(_Lines):
    """`/api/chat` lines: one per delta, then the done line with the counts."""

    def encode(self, batch: list[Delta]) -> bytes:
        created = now()
        lines = []
        for delta in batch:
            message = AnswerMessage(
                role="assistant",
                content=delta.content,
                thinking=delta.thinking or None,
                tool_calls=delta.tool_calls or None,
            )
            line = ChatAnswer(model=self._model, created_at=created, message=message, done=False)
            lines.append(_encode(line) + b"\n")
        return b"".join(lines)

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        head = {"model": self._model, "created_at": now(), "message": {"role": "assistant", "content": ""}}
        return _encode(head | self._totals(outcome)) + b"\n"


class GenerateLines(_Lines):
    """`/api/generate` lines: `response` carries the text."""

    def encode(self, batch: list[Delta]) -> bytes:
        created = now()
        lines = []
        for delta in batch:
            line = GenerateAnswer(
                model=self._model,
                created_at=created,
                response=delta.content,
                thinking=delta.thinking or None,
                tool_calls=delta.tool_calls or None,
                done=False,
            )
            lines.append(_encode(line) + b"\n")
        return b"".join(lines)

    def trailer(self, outcome: Outcome, include_usage: bool) -> bytes:
        head = {"model": self._model, "created_at": now(), "response": ""}
        return _encode(head | self._totals(outcome)) + b"\n"
