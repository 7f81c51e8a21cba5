"""What flows through a pipeline: the per-request context, the reply, and a stream of deltas."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from citadel_proxy.cache.codec import Vector
    from citadel_proxy.observability.tracing import RequestTrace
    from citadel_proxy.pipeline.request import InferenceRequest
    from citadel_proxy.pipeline.spec import Pipeline


class ToolFunction(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    arguments: msgspec.Raw = msgspec.Raw(b"{}")
    index: int | None = None


class ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    function: ToolFunction
    id: str | None = None


class Delta(msgspec.Struct, frozen=True):
    """New output since the last delta: one Ollama token, or several grouped by the chunking stage."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] | None = None


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """A whole answer, independent of the wire format it will be sent in (also what a cache stores)."""

    content: str
    thinking: str = ""
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    finish_reason: str | None = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TokenStream(Protocol):
    """Deltas as they arrive, a batch per read; `None` at the end.

    `read` must be safe to cancel while it waits (nothing may be lost): the chunking stage waits on it
    with a timer, and wrappers therefore do their work only after the inner read has returned.
    """

    async def read(self) -> list[Delta] | None: ...

    async def aclose(self) -> None: ...


# nginx's status for a client that closed the connection before the answer.
CLIENT_CLOSED_STATUS = 499


@dataclass(slots=True)
class Outcome:
    """How the exchange ended; filled in as the answer arrives, read by stages after completion."""

    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    status: int = 200
    error_code: str | None = None
    cache_hit: bool = False
    # Ollama's prompt count reached num_ctx: it cut the prompt (the context_guard stage notices).
    context_truncated: bool = False

    def tokens(self, completion: Completion | None) -> tuple[int, int]:
        """Prompt and completion tokens: Ollama's counts as recorded here, else the whole answer's."""
        if (self.prompt_tokens or self.completion_tokens) or completion is None:
            return self.prompt_tokens, self.completion_tokens
        return completion.prompt_tokens, completion.completion_tokens

    def answered(self, completion: Completion) -> None:
        """The exchange was answered whole (by Ollama, or from the cache): its end and its counts."""
        self.finish_reason = completion.finish_reason
        self.prompt_tokens, self.completion_tokens = completion.prompt_tokens, completion.completion_tokens

    def client_gone(self) -> None:
        """The client left before the answer was complete (nginx's 499)."""
        self.status, self.error_code = CLIENT_CLOSED_STATUS, "client_closed"

    def failed(self, status: int, code: str | None) -> None:
        """The exchange ended with an error answer (or error event) of this status and code."""
        self.status, self.error_code = status, code


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling, as established by the auth stage."""

    name: str
    scopes: frozenset[str]
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(slots=True)
class Context:
    """Everything one request carries through the pipeline. Stages read and extend it."""

    request_id: str
    pipeline: Pipeline
    route: str
    client: str
    headers: Headers
    # The request in no wire format (pipeline/request.py): the route's decoding of the client's body.
    request: InferenceRequest
    model_requested: str
    model: str
    stream: bool
    include_usage: bool = False
    principal: Principal | None = None
    conversation_id: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    started: float = field(default_factory=time.perf_counter)
    # The request's trace when monitoring.tracing is enabled; stages that wait note their waits on it.
    trace: RequestTrace | None = None
    # The backend that answered, and every backend tried in order (failover), for the audit record.
    backend: str | None = None
    attempts: list[str] = field(default_factory=list)
    # A newer request of the same session cancelled this one (pipeline `supersede`).
    superseded: bool = False


@dataclass(slots=True)
class Reply:
    """A whole completion, or a stream of deltas still arriving (exactly one is set).

    An embed request's reply is a completion (its prompt tokens) with the vectors in input order.
    """

    completion: Completion | None = None
    stream: TokenStream | None = None
    embeddings: list[Vector] | None = None
