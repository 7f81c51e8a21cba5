"""Chat, completion and agent-stream routes: each runs the pipeline its path (or agent type) names."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from citadel_proxy import errors
from citadel_proxy.auth.guard import refuse_locked_out, require_key
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.disconnect import watch_disconnect
from citadel_proxy.http.responses import json_response
from citadel_proxy.http.stream_encoder import StreamEncoder
from citadel_proxy.http.stream_response import StreamResponse, deadline_error
from citadel_proxy.observability.logs import log_request
from citadel_proxy.observability.request_id import new_request_id
from citadel_proxy.observability.tracing import RequestTrace
from citadel_proxy.openai.limits import check_chat, check_completion
from citadel_proxy.openai.responses import chat_completion, text_completion
from citadel_proxy.openai.sse import ChatChunks, TextChunks
from citadel_proxy.openai.translate import chat_to_request, completion_to_request
from citadel_proxy.openai.wire import ChatRequest, CompletionRequest
from citadel_proxy.pipeline.options import with_model_defaults
from citadel_proxy.pipeline.table import BuiltPipeline
from citadel_proxy.pipeline.types import Completion, Context, Principal, Reply
from citadel_proxy.services import Services
from citadel_proxy.timeouts import TaskDeadline, TimeoutSweeper

_chat_decoder = msgspec.json.Decoder(ChatRequest)
_completion_decoder = msgspec.json.Decoder(CompletionRequest)
# An agent profile as an OpenAI base URL: /v1/<profile>/chat/completions or /v1/<profile>/completions.
_PROFILE_PATH = re.compile(r"/v1/(?P<profile>[^/]+)/(?P<api>chat/completions|completions)")
Api = Literal["chat", "completion"]
# A profile is reached in either API: an IDE's copilot plugin may speak chat, a voice client completions.
# The profile's stages (chunking, deadline, limits) are the same; only the wire format differs.
_FORMAT_OF_API: dict[str, Api] = {"chat/completions": "chat", "completions": "completion"}


async def pipeline_route(request: Request) -> Response | ASGIApp:
    """A route listed in a pipeline file (`routes:`)."""
    services: Services = request.state.services
    route = request.scope["path"]  # http.front serves exact paths only
    built = services.pipelines.current.by_route.get(route)
    if built is None:
        raise errors.NotFound(f"no pipeline serves {route} since the last reload")
    return await run(request, services, built, route)


def is_profile_path(path: str) -> bool:
    return _PROFILE_PATH.fullmatch(path) is not None


async def profile_route(request: Request) -> Response | ASGIApp:
    """`/v1/<profile>/chat/completions` or `/v1/<profile>/completions`: the agent profile <profile>, for
    clients that take one base URL (`/v1/<profile>`), in whichever of the two APIs the path names."""
    services: Services = request.state.services
    route = request.scope["path"]
    found = _PROFILE_PATH.fullmatch(route)
    if found is None:
        raise errors.NotFound(f"{route} names no agent profile")
    name, api = found.group("profile", "api")
    built = services.pipelines.current.agents.get(name)
    if built is None:
        known = await _names_for_a_caller(request, services, services.pipelines.current.agents)
        raise errors.NotFound(f"no agent profile named {name!r} (known: {known})")
    return await run(request, services, built, route, _FORMAT_OF_API[api])


async def agent_stream(request: Request) -> Response | ASGIApp:
    """`/v1/agents/stream?type=X` (also `agent_type=X`): the agent profile named X."""
    services: Services = request.state.services
    params = request.query_params
    agent_type = params.get("type") or params.get("agent_type")
    agents = services.pipelines.current.agents
    built = agents.get(agent_type or "")
    if built is None:
        known = await _names_for_a_caller(request, services, agents)
        what = f"unknown agent type {agent_type!r}" if agent_type else "the agent type is missing (?type=X)"
        raise errors.UnknownAgentType(f"{what}; known types: {known}", param="type")
    return await run(request, services, built, "/v1/agents/stream")


async def _names_for_a_caller(request: Request, services: Services, names: Iterable[str]) -> str:
    """The configured profile names, for a caller with a valid key only: the list is not for strangers
    (401 without one, counted as a failed authentication like any other)."""
    refuse_locked_out(request)
    principal = await require_key(services.key_store, request.headers)
    request.state.key_name = principal.name
    return ", ".join(sorted(names)) or "none configured"


async def run(
    request: Request, services: Services, built: BuiltPipeline, route: str, api: Api | None = None
) -> Response | ASGIApp:
    """Serve `built` in `api` (by default the pipeline's own format)."""
    gateway = services.config.gateway
    if api is None:
        api = "chat" if built.spec.format == "chat" else "completion"
    tracer = services.tracing
    trace = None if tracer is None else tracer.begin(request, built.spec.name, route)
    principal = await admit(request, built, trace)
    # Not kept in this frame: a whole answer is awaited here, and a large body is not needed once decoded.
    ctx = _context(request, services, built, route, await read_body(request, gateway.max_body_bytes), api)
    ctx.principal, ctx.trace = principal, trace
    request.state.access_logged = True
    if ctx.stream:
        encoder: StreamEncoder = (
            ChatChunks(ctx.model, int(time.time()))
            if api == "chat"
            else TextChunks(ctx.model, int(time.time()))
        )
        return open_stream(ctx, built, services, encoder)
    completion = whole(await complete_logged(request, ctx, built, services.deadlines))
    created = int(time.time())
    answer = (
        chat_completion(completion, ctx.model, created)
        if api == "chat"
        else text_completion(completion, ctx.model, created)
    )
    return json_response(answer, headers=ctx.response_headers)


def open_stream(
    ctx: Context, built: BuiltPipeline, services: Services, encoder: StreamEncoder
) -> StreamResponse:
    """The streamed answer: `built`'s handler run under the gateway's stream settings."""
    gateway = services.config.gateway
    return StreamResponse(
        ctx,
        built.handler,
        encoder,
        deadlines=services.deadlines,
        keepalive_s=gateway.keepalive_s,
        header_grace_s=gateway.header_grace_ms / 1000,
        write_timeout_s=gateway.write_timeout_s,
        on_finish=finish,
    )


def _context(
    request: Request, services: Services, built: BuiltPipeline, route: str, body: bytes, api: Api
) -> Context:
    pipeline = built.spec
    request_id, client = caller(request)
    wire: ChatRequest | CompletionRequest
    wire = decode(body, _chat_decoder) if api == "chat" else decode(body, _completion_decoder)
    request.scope["state"]["model"] = wire.model
    model = services.models.resolve(wire.model)
    stream = wire.stream if wire.stream is not None else pipeline.stream_default
    if isinstance(wire, ChatRequest):
        check_chat(wire, services.config.gateway)
        neutral = chat_to_request(wire, model, stream)
    else:
        check_completion(wire, services.config.gateway)
        neutral = completion_to_request(wire, model, stream)
    neutral = with_model_defaults(neutral, services.models, pipeline)
    usage = bool(wire.stream_options and wire.stream_options.include_usage)
    ctx = Context(
        request_id, pipeline, route, client, request.headers, neutral,
        wire.model, model, stream, usage,
    )  # fmt: skip
    ctx.response_headers["X-Request-ID"] = request_id  # no middleware adds it on http.front's short way
    return ctx


async def admit(
    request: Request, built: BuiltPipeline, trace: RequestTrace | None = None
) -> Principal | None:
    """The pipeline's first step (auth) on the headers alone, before the body is read."""
    if built.admit is None:
        return None
    refuse_locked_out(request)
    pending = built.admit(request.headers)
    principal = await (pending if trace is None else trace.waited("key lookup", pending))
    if principal is not None:
        # For the audit of a refusal that follows (bad body); into the dict request.state wraps, which
        # State's __setattr__ (a Python method) would reach a step later.
        request.scope["state"]["key_name"] = principal.name
    return principal


def caller(request: Request) -> tuple[str, str]:
    """The request id (set by http.front) and the client's address."""
    request_id = request.scope.get("state", {}).get("request_id") or new_request_id()
    return request_id, request.client.host if request.client else ""


async def complete_logged(
    request: Request, ctx: Context, built: BuiltPipeline, deadlines: TimeoutSweeper
) -> Reply:
    """`complete`, with the outcome of an error recorded and the access line written either way."""
    try:
        return await complete(request, ctx, built, deadlines)
    except errors.GatewayError as error:
        ctx.outcome.failed(error.status, error.code)
        raise
    finally:
        finish(ctx)


def finish(ctx: Context) -> None:
    """The exchange is over: its trace ends and its access line is written."""
    if ctx.trace is not None:
        ctx.trace.end(ctx)
    log_request(ctx)


async def complete(request: Request, ctx: Context, built: BuiltPipeline, deadlines: TimeoutSweeper) -> Reply:
    """Run a non-streaming pipeline under its deadline, dropping the upstream if the client leaves."""
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()
    watcher = watch_disconnect(request.receive, task, gone.set)
    deadline = TaskDeadline(deadlines, task, ctx.pipeline.timeout_s)
    try:
        reply = await built.handler(ctx)
    except asyncio.CancelledError:
        if deadline.end():
            raise deadline_error(ctx) from None
        if ctx.superseded and not gone.is_set():
            task.uncancel()
            raise errors.Superseded("a newer request of this session replaced this one") from None
        if not gone.is_set():
            raise
        task.uncancel()
        # Its outcome (499, client_closed) is recorded by whoever catches it, as for any error.
        raise errors.ClientClosedRequest("the client closed the connection before the answer") from None
    finally:
        deadline.end()
        watcher.cancel()
    return reply


def whole(reply: Reply) -> Completion:
    """The completion of a non-streaming request's reply (a stage that answered with a stream is a bug)."""
    if reply.completion is None:
        raise errors.GatewayError("a stage answered a non-streaming request with a stream")
    return reply.completion
