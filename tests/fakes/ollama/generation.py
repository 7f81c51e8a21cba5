"""Planning and writing one chat/generate answer: its token lines, done line and metrics (sections 1-3)."""

from __future__ import annotations

import math
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from .behavior import Behavior
from .models import FakeModel
from .wire import count_tokens, created_at, go_json


def tool_call_id() -> str:
    """The Go parser's id: "call_" plus 8 random [a-z0-9]."""
    alphabet = string.ascii_lowercase + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(8))


def make_tool_calls(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama-shaped tool calls (id, function.index inside function, arguments as an object)."""
    calls = []
    for index, spec in enumerate(specs):
        if "function" in spec:
            calls.append(spec)
            continue
        function = {"index": index, "name": spec["name"], "arguments": spec.get("arguments", {})}
        calls.append({"id": spec.get("id") or tool_call_id(), "function": function})
    return calls


@dataclass
class _Step:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None


class _Generation:
    """The lines and final object of one chat/generate answer, following sections 1-3 of the doc."""

    def __init__(self, kind: str, req: dict[str, Any], model: FakeModel, behavior: Behavior, cold: bool):
        self.kind, self.req, self.model, self.b, self.cold = kind, req, model, behavior, cold
        self.name: str = req["model"]
        self.start_ns = time.perf_counter_ns()
        self.first_ns: int | None = None
        self.calls = make_tool_calls(behavior.tool_calls)
        self.steps, self.done_reason = self._plan()
        self.n_tokens = sum(1 for s in self.steps if s.tool_calls is None)

    def _plan(self) -> tuple[list[_Step], str]:
        b = self.b
        thinking = [] if self.req.get("think") is False else b.thinking
        steps = [_Step(thinking=t) for t in thinking] + [_Step(content=c) for c in b.tokens]
        reason = b.done_reason
        limit = (self.req.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 < limit < len(steps):
            steps, reason = steps[:limit], "length"
        if b.big_line_bytes and 0 <= b.big_line_index < len(steps):
            step = steps[b.big_line_index]
            pad = "x" * max(0, b.big_line_bytes - len(self.line(step)))
            step.content, step.thinking = (
                (step.content + pad, step.thinking)
                if not step.thinking
                else (step.content, step.thinking + pad)
            )
        if self.calls and not b.tool_calls_on_final:
            steps.append(_Step(tool_calls=self.calls))
        return steps, reason

    def cut(self) -> tuple[int, str]:
        """How many token lines go out, then what ends the answer: "final", "error" or "close"."""
        n = len(self.steps)
        ends = [(self.b.error_after, "error"), (self.b.close_after, "close")]
        hits = [(at, what) for at, what in ends if at is not None and at <= n]
        return min(hits) if hits else (n, "final")

    def _body(self, content: str, thinking: str, calls: list[dict[str, Any]] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.name, "created_at": created_at()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            obj["message"] = message
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        return obj

    def line(self, step: _Step) -> bytes:
        obj = self._body(step.content, step.thinking, step.tool_calls)
        obj["done"] = False
        if self.kind == "generate" and step.tool_calls:
            obj["tool_calls"] = step.tool_calls
        return (go_json(obj) + "\n").encode()

    def final(self, aggregate: bool) -> dict[str, Any]:
        """The done line, or (aggregate) the stream:false object with everything concatenated."""
        steps = self.steps[: self.cut()[0]] if aggregate else []
        content = "".join(s.content for s in steps) + self.b.final_content
        thinking = "".join(s.thinking for s in steps)
        calls = self.calls if aggregate or self.b.tool_calls_on_final else []
        obj = self._body(content, thinking, calls)
        if self.kind == "chat":
            if self.done_reason:
                obj["done_reason"] = self.done_reason
            obj["done"] = True
        else:
            obj["done"] = True
            if self.done_reason:
                obj["done_reason"] = self.done_reason
            if not self.req.get("raw"):
                size = self.prompt_tokens() + self.n_tokens
                obj["context"] = [(i * 7919 + 128000) % 128256 for i in range(size)]
        obj.update(self.metrics())
        if self.kind == "generate" and calls:
            obj["tool_calls"] = calls
        return obj

    def prompt_tokens(self) -> int:
        if self.b.prompt_eval_count is not None:
            return self.b.prompt_eval_count
        if self.kind == "chat":
            messages = [m for m in self.req.get("messages") or [] if isinstance(m, dict)]
            return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        texts = (self.req.get(k) for k in ("system", "prompt", "suffix"))
        return sum(count_tokens(t) for t in texts if isinstance(t, str)) + 4

    def metrics(self) -> dict[str, int]:
        now = time.perf_counter_ns()
        evals = self.b.eval_count if self.b.eval_count is not None else self.n_tokens
        prompt = self.prompt_tokens()
        load_ns = 1_200_000 if self.cold else 40_000
        prompt_ns = prompt * 25_000
        eval_ns = max(now - (self.first_ns or now), evals * 10_000)
        values = {
            "total_duration": (now - self.start_ns) + load_ns + prompt_ns + eval_ns,
            "load_duration": load_ns,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": prompt_ns,
            "eval_count": evals,
            "eval_duration": eval_ns,
        }
        return {k: v for k, v in values.items() if v}


def split_bytes(data: bytes, pieces: int) -> list[bytes]:
    size = max(1, math.ceil(len(data) / max(1, pieces)))
    return [data[i : i + size] for i in range(0, len(data), size)]
