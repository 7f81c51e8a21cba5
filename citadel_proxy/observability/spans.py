"""What a request's span says, in OpenTelemetry's GenAI semantic conventions, read from its context.

Message text appears only with `monitoring.tracing.capture_content` (gen_ai.input.messages,
gen_ai.system_instructions, gen_ai.output.messages); otherwise a span carries names, counts and times.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from citadel_proxy.audit.conversations import normalise

if TYPE_CHECKING:
    from citadel_proxy.observability.tracing import RequestTrace
    from citadel_proxy.pipeline.request import InferenceRequest
    from citadel_proxy.pipeline.types import Context

OPERATIONS = {"chat": "chat", "generate": "text_completion", "embed": "embeddings"}
_CONVERSATION_HEADER = "x-conversation-id"
_encode = msgspec.json.Encoder().encode


def operation(ctx: Context) -> str:
    return OPERATIONS.get(ctx.request.kind, ctx.request.kind)


def settle_attempt(trace: RequestTrace, ctx: Context) -> None:
    """End a streamed upstream attempt from the outcome, and note its first token.

    (The attempts are named as GenAI client spans in the export thread: otlp.py.)
    """
    outcome = ctx.outcome
    attempt = trace.attempt
    if attempt is None:
        return
    first = outcome.first_token_at
    if first is not None and not outcome.cache_hit:
        attempt.first_token_ns = trace.epoch_ns(first)
    if attempt.end_ns:
        return
    # A stream: it ended with Ollama's last line, or when the request ended (error, client gone).
    finished = outcome.finished_at
    attempt.end_ns = trace.epoch_ns(finished) if finished is not None else time.time_ns()
    if finished is None and outcome.error_code:
        attempt.error_type = outcome.error_code
        if outcome.status >= 500:
            attempt.error_message = outcome.error_code


def request_attributes(trace: RequestTrace, ctx: Context) -> dict[str, Any]:
    """The request span's attributes (gen_ai.*, the pipeline, the key's name, session.id)."""
    outcome = ctx.outcome
    op = operation(ctx)
    # Every attribute is paid for again in the export thread's encoding (README, Tracing): no empty
    # values, nothing the resource, the access line or a child span already says.
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": op,
        "gen_ai.system": "ollama",
        "gen_ai.request.model": ctx.model_requested,
        "gen_ai.response.model": ctx.model,
        "gen_ai.usage.input_tokens": outcome.prompt_tokens,
        "citadel.pipeline": trace.pipeline,
        "http.route": ctx.route,
        "http.response.status_code": outcome.status,
    }
    if op != "embeddings":
        attributes["gen_ai.usage.output_tokens"] = outcome.completion_tokens
    if outcome.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = (outcome.finish_reason,)
    if outcome.error_code:
        attributes["error.type"] = outcome.error_code
    if ctx.principal is not None:
        attributes["citadel.key"] = ctx.principal.name
    session = ctx.conversation_id or _session_header(ctx)
    if session:
        attributes["session.id"] = session
    if trace.attempt is not None and trace.attempt.attributes is not None:
        # The GenAI conventions put the backend's address on the request's span too: a search by
        # server.address finds the requests, not only their attempts.
        attributes["server.address"] = trace.attempt.attributes["server.address"]
        attributes["server.port"] = trace.attempt.attributes["server.port"]
    if ctx.stream:
        attributes["citadel.stream"] = True
    if outcome.cache_hit:
        attributes["citadel.cache_hit"] = True
    _request_options(ctx.request, attributes)
    if trace.tracer.settings.capture_content:
        _content(trace, ctx, attributes)
    return attributes


def _session_header(ctx: Context) -> str | None:
    """X-Conversation-ID where no audit stage read it: only a well-formed one (an id, not free text)."""
    given = ctx.headers.get(_CONVERSATION_HEADER)
    return normalise(given.strip()) if given and given.strip() else None


def _request_options(request: InferenceRequest, attributes: dict[str, Any]) -> None:
    options = request.options
    if options is None:
        return
    for key, value in (
        ("gen_ai.request.max_tokens", options.num_predict),
        ("gen_ai.request.temperature", options.temperature),
        ("gen_ai.request.top_p", options.top_p),
        ("gen_ai.request.seed", options.seed),
    ):
        if value is not None:
            attributes[key] = value


def _content(trace: RequestTrace, ctx: Context, attributes: dict[str, Any]) -> None:
    """Prompt and answer as the GenAI conventions' JSON message lists (capture_content only)."""
    request = ctx.request
    if request.kind == "chat":
        messages = [_text(m.role, m.content) for m in request.messages or []]
    elif request.kind == "generate":
        messages = [_text("user", request.prompt)]
        if request.system:
            attributes["gen_ai.system_instructions"] = _json([{"type": "text", "content": request.system}])
    else:
        messages = [_text("user", text) for text in request.inputs()]
    attributes["gen_ai.input.messages"] = _json(messages)
    if trace.output is not None:
        answer = {
            "role": "assistant",
            "parts": [{"type": "text", "content": "".join(trace.output)}],
            "finish_reason": ctx.outcome.finish_reason or "",
        }
        attributes["gen_ai.output.messages"] = _json([answer])


def _text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def _json(value: object) -> str:
    return _encode(value).decode()
