"""The handler at the end of every pipeline: the call to Ollama itself, its request translated here."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping

import msgspec

from citadel_proxy import errors
from citadel_proxy.fleet.dispatch import dispatch, sent_to_lone
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.upstream.client import OllamaClient
from citadel_proxy.upstream.ndjson import (
    UpstreamStream,
    chat_delta,
    chat_line_decoder,
    generate_delta,
    generate_line_decoder,
)
from citadel_proxy.upstream.translate import chat_to_ollama, generate_to_ollama
from citadel_proxy.upstream.wire import ChatLine, GenerateLine

_encode = msgspec.json.Encoder().encode


MODEL_HEADER = "X-Citadel-Model"


def upstream_handler(fleet: Fleet, resolve: Callable[[str], str] = str) -> Handler:
    """`resolve`: a fallback model's name as configured -> the model a backend serves."""

    async def call_ollama(ctx: Context) -> Reply:
        fleet.sessions.claim(ctx)
        fleet.key_limits.enter(ctx)
        try:
            reply = await _dispatched(fleet, ctx)
        except errors.ServiceUnavailable as exc:
            if exc.code != "backends_busy" or not ctx.pipeline.fallback_models:
                raise
            reply = await _fallback(fleet, ctx, resolve, exc)
        ctx.response_headers[MODEL_HEADER] = ctx.model
        return reply

    return call_ollama


async def _dispatched(fleet: Fleet, ctx: Context) -> Reply:
    is_chat = ctx.request.kind == "chat"
    if is_chat:
        endpoint, body = "/api/chat", _encode(chat_to_ollama(ctx.request))
    else:
        endpoint, body = "/api/generate", _encode(generate_to_ollama(ctx.request))
    lone = fleet.lone
    if lone is not None and ctx.trace is None:
        sent_to_lone(fleet, ctx, lone)
        return await _call(ctx, endpoint, body, is_chat, lone.client)
    # Translated once: a failover sends the same bytes to the next backend.
    return await dispatch(fleet, ctx, functools.partial(_send, ctx, endpoint, body, is_chat))


async def _fallback(
    fleet: Fleet, ctx: Context, resolve: Callable[[str], str], refused: errors.ServiceUnavailable
) -> Reply:
    """The pipeline's fallback models in order, each while the one before cannot be admitted in time;
    the reply, the audit and the metrics then name the model that served (ctx.model)."""
    for name in ctx.pipeline.fallback_models:
        try:
            model = resolve(name)
        except errors.ModelNotFound:
            continue
        ctx.request = msgspec.structs.replace(ctx.request, model=model)
        ctx.model = model
        try:
            return await _dispatched(fleet, ctx)
        except (errors.ServiceUnavailable, errors.ModelNotFound) as exc:
            if isinstance(exc, errors.ServiceUnavailable) and exc.code != "backends_busy":
                raise
    raise refused


async def _send(ctx: Context, endpoint: str, body: bytes, is_chat: bool, client: OllamaClient) -> Reply:
    """One attempt on one backend; a traced request's attempt runs inside an upstream span of its own,
    with the headers that carry the trace on to Ollama (an untraced one pays a None check)."""
    trace = ctx.trace
    if trace is not None:
        service = client.service
        call = functools.partial(_call, ctx, endpoint, body, is_chat, client)
        return await trace.attempt_upstream(service.host, service.port, call)
    return await _call(ctx, endpoint, body, is_chat, client)


async def _call(
    ctx: Context,
    endpoint: str,
    body: bytes,
    is_chat: bool,
    client: OllamaClient,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    if ctx.stream:
        response = await client.stream(endpoint, body, headers)
        cap = client.service.max_line_bytes
        if is_chat:
            return Reply(stream=UpstreamStream(response, chat_line_decoder, chat_delta, ctx.outcome, cap))
        return Reply(stream=UpstreamStream(response, generate_line_decoder, generate_delta, ctx.outcome, cap))
    raw = await client.post(endpoint, body, headers)
    return Reply(completion=_completion(ctx, raw, is_chat))


def _completion(ctx: Context, raw: bytes, is_chat: bool) -> Completion:
    try:
        if is_chat:
            chat = chat_line_decoder.decode(raw)
            line: ChatLine | GenerateLine = chat
            message = chat.message
            content = message.content if message else ""
            thinking = message.thinking if message else ""
            calls = (message.tool_calls if message else None) or []
        else:
            generated = generate_line_decoder.decode(raw)
            line = generated
            content, thinking, calls = generated.response, generated.thinking, generated.tool_calls or []
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise errors.UpstreamMalformed(f"Ollama's answer is not valid: {exc}") from None
    if line.error is not None:
        raise errors.UpstreamError(f"Ollama failed: {line.error}")
    completion = Completion(
        content=content,
        thinking=thinking,
        tool_calls=calls,
        finish_reason=line.done_reason or None,
        prompt_tokens=line.prompt_eval_count,
        completion_tokens=line.eval_count,
    )
    outcome = ctx.outcome
    outcome.first_token_at = outcome.finished_at = time.perf_counter()
    outcome.answered(completion)
    return completion
