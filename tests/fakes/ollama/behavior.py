"""What a generation does (Behavior) and what the fake records: requests, answers, pulls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEFAULT_TOKENS = ("Hello", ",", " world", "!")


@dataclass
class Behavior:
    """What one generation does. "Token lines" are thinking lines, then content lines, then (if
    `tool_calls_on_final` is False) one tool-call line; `error_after`/`close_after` count them.

    - first_token_delay_s: nothing at all (not even headers) is sent before the first line (10.2).
    - token_delay_s: between writes (one write carries `tokens_per_write` lines).
    - error_status/error_body: answer with that status and JSON body (a str body is sent as is) instead.
    - error_after=N: N token lines, then `{"error": error_message}` and no done line (0: a 500 JSON answer).
    - close_after=N: N token lines, then the connection is closed with no done line.
    - tool_calls: [{"name": ..., "arguments": {...}}] (id/index are added) or full Ollama tool-call dicts.
    - big_line_bytes: pads token line `big_line_index` with "x" to about that many bytes.
    - split_writes=K: each write goes out in K pieces with a short sleep between them.
    - eval_count/prompt_eval_count: None means computed (token lines / prompt size).
    """

    tokens: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENS))
    thinking: list[str] = field(default_factory=list)
    final_content: str = ""
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    error_status: int | None = None
    error_body: Any = None
    error_message: str = "an error was encountered while running the model: fake failure"
    error_after: int | None = None
    close_after: int | None = None
    done_reason: str = "stop"
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_calls_on_final: bool = True
    big_line_bytes: int = 0
    big_line_index: int = 0
    split_writes: int = 1
    tokens_per_write: int = 1

    @classmethod
    def counted(cls, n: int, **kwargs: Any) -> Behavior:
        """N predictable tokens "w0 ", "w1 ", ... (what the CLI's --tokens uses)."""
        return cls(tokens=counted_tokens(n), **kwargs)


def counted_tokens(n: int) -> list[str]:
    """The tokens of Behavior.counted(n): their concatenation is the expected content."""
    return [f"w{i} " for i in range(n)]


class RecordedRequest(NamedTuple):
    """One request as the fake received it (json body is None when absent or not JSON)."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]


@dataclass
class StreamRecord:
    """Lifecycle of one chat/generate answer (streamed or not); times are time.monotonic().

    outcome: "done" (done line / object sent), "error" (error line or 500), "error_status", "close"
    (the fake dropped the connection), "disconnect" (the peer left first). `writing` is True while a
    write waits for the peer to read (backpressure); `bytes_written` counts what left so far.
    """

    path: str
    model: str
    stream: bool
    started_at: float = field(default_factory=time.monotonic)
    headers_sent: bool = False
    lines_written: int = 0
    bytes_written: int = 0
    writing: bool = False
    completed: bool = False
    outcome: str = ""
    closed_by_fake: bool = False
    disconnected: bool = False
    disconnected_at: float | None = None
    disconnect_event: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_disconnected(self) -> None:
        self.outcome = self.outcome or "disconnect"
        if not self.disconnected:
            self.disconnected, self.disconnected_at = True, time.monotonic()
            self.disconnect_event.set()


@dataclass
class PullRecord:
    """One /api/pull: the job goes on after the client leaves, as the brief of our tests asks."""

    model: str
    client_disconnected: bool = False
    completed: bool = False
    failed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
