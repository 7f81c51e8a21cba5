"""Ollama's own API for its clients: chat and generate through their pipelines, and the model routes.

POST   /api/chat, /api/generate   the routes of pipelines of `format: ollama-chat` / `ollama-generate`
GET    /api/tags                  the models a key may ask for, aliases included, with Ollama's details
POST   /api/show                  Ollama's answer for the model a name (or alias) routes to
GET    /api/ps                    the loaded models the gateway routes to
GET    /api/version               Ollama's version (clients check features by it)
HEAD/GET /                        "Ollama is running" (clients probe it before anything else)
POST   /api/pull, DELETE /api/delete    admin scope
Errors are Ollama's `{"error": "..."}` on every one of them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from citadel_proxy import errors
from citadel_proxy.auth.guard import Endpoint, admin_only, any_key
from citadel_proxy.fleet.manage import merged_tags
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.responses import NO_STORE, json_response, shaped_error
from citadel_proxy.management import ollama, pulls
from citadel_proxy.management.names import canonical, validate_name
from citadel_proxy.management.wire import PullEvent, Running, Tags
from citadel_proxy.ollama_native.answers import (
    ChatLines,
    GenerateLines,
    chat_answer,
    error_body,
    generate_answer,
)
from citadel_proxy.ollama_native.translate import chat_to_request, generate_to_request
from citadel_proxy.ollama_native.wire import ChatBody, GenerateBody, ModelBody
from citadel_proxy.routes.protocol import WireProtocol, body_decoder
from citadel_proxy.services import Services

_model_decoder = msgspec.json.Decoder(ModelBody)
_encode = msgspec.json.Encoder().encode
_MAX_BODY = 64 * 1024
_PULL_START_TIMEOUT_S = 30.0
_PULL_HEARTBEAT_S = 15.0


CHAT = WireProtocol(body_decoder(ChatBody, chat_to_request), chat_answer, ChatLines, error_body)
GENERATE = WireProtocol(
    body_decoder(GenerateBody, generate_to_request), generate_answer, GenerateLines, error_body
)


def _ollama_errors(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def shaped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except errors.GatewayError as error:
            return shaped_error(request, error, error_body)

    return shaped


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def root(_request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return json_response({"version": await ollama.version(_services(request).upstream)})


async def tags(request: Request) -> Response:
    """Every name the gateway routes (aliases included) whose model a backend has, with that model's facts
    (merged across the fleet's backends)."""
    services = _services(request)
    merged, _, _ = await merged_tags(services.fleet)
    installed = {canonical(m.name): m for m in merged}
    listed = []
    for name, target in sorted(services.models.routes.items()):
        model = installed.get(canonical(target))
        if model is not None:
            listed.append(msgspec.structs.replace(model, name=name, model=name))
    return json_response(Tags(models=listed), headers=NO_STORE)


async def ps(request: Request) -> Response:
    services = _services(request)
    routed = {canonical(target) for target in services.models.routes.values()}
    answers = await asyncio.gather(*(ollama.running(b.client) for b in services.fleet.backends))
    loaded = [m for answer in answers for m in answer if canonical(m.name) in routed]
    return json_response(Running(models=loaded), headers=NO_STORE)


async def show(request: Request) -> Response:
    services = _services(request)
    body = decode(await read_body(request, _MAX_BODY), _model_decoder)
    target = services.models.resolve(body.model_name())
    query = _encode({"model": target, "verbose": bool(body.verbose)})
    try:
        raw = await services.upstream.fetch("POST", "/api/show", query, total_s=ollama.MANAGEMENT_TIMEOUT_S)
    except errors.ModelNotFound:
        raise ollama.not_installed(target) from None
    return Response(raw, media_type="application/json", headers=NO_STORE)


async def _model_of(request: Request) -> tuple[str, ModelBody]:
    body = decode(await read_body(request, _MAX_BODY), _model_decoder)
    registries = _services(request).config.ollama.registries
    return validate_name(body.model_name(), registries=registries), body


async def delete(request: Request) -> Response:
    name, _ = await _model_of(request)
    await ollama.delete(_services(request).upstream, name)
    return Response(status_code=200)


async def pull(request: Request) -> Response:
    """The pull runs in the app's PullManager (it goes on if the client leaves); Ollama's progress lines,
    or with `stream: false` the last of them once it is done."""
    name, body = await _model_of(request)
    job = _services(request).pulls.pull(name)
    try:
        await job.wait_started(_PULL_START_TIMEOUT_S)
    except TimeoutError:
        raise errors.DeadlineExceeded(
            f"Ollama has not started pulling '{name}' after {_PULL_START_TIMEOUT_S:g} s"
        ) from None
    if body.stream is False:
        last: PullEvent | None = None
        async for event in pulls.events(job, _PULL_HEARTBEAT_S):
            if event.error is not None:
                raise errors.UpstreamError(event.error.message, code="pull_failed")
            last = event
        return json_response({"status": last.status if last else "success"})
    return StreamingResponse(_pull_lines(job), media_type="application/x-ndjson")


async def _pull_lines(job: pulls.PullJob) -> AsyncIterator[bytes]:
    async for event in pulls.events(job, _PULL_HEARTBEAT_S):
        if event.error is not None:
            yield _encode({"error": event.error.message}) + b"\n"
            continue
        line: dict[str, str | int | None] = {"status": event.status, "digest": event.digest}
        line |= {"total": event.total, "completed": event.completed}
        yield _encode({k: v for k, v in line.items() if v is not None}) + b"\n"


def routes() -> list[tuple[str, Endpoint, list[str]]]:
    """(path, endpoint, methods) of the model routes; the chat and generate routes are the pipelines'."""
    return [
        ("/", root, ["GET", "HEAD"]),
        ("/api/version", _ollama_errors(any_key(version)), ["GET"]),
        ("/api/tags", _ollama_errors(any_key(tags)), ["GET"]),
        ("/api/ps", _ollama_errors(any_key(ps)), ["GET"]),
        ("/api/show", _ollama_errors(any_key(show)), ["POST"]),
        ("/api/pull", _ollama_errors(admin_only(pull)), ["POST"]),
        ("/api/delete", _ollama_errors(admin_only(delete)), ["DELETE"]),
    ]
