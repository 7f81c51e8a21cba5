"""The console's data routes (session and CSRF checked by guard.data): the management handlers reused
as they are, plus the few things only the console does (keys, keep warm/unload, the Overview stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from citadel_proxy import errors
from citadel_proxy.auth.keys import Scope
from citadel_proxy.console import guard, overview, pipelines, playground
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.responses import NO_STORE, json_response
from citadel_proxy.management.names import validate_name
from citadel_proxy.routes import audit, models
from citadel_proxy.services import Services

_MAX_BODY = 16 * 1024
# Loading a large model from disk into VRAM can take minutes.
_LOAD_TIMEOUT_S = 300.0
_MAX_PIPELINE_BYTES = 256 * 1024
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class NewKeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    scopes: list[Scope]
    requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str


class KeepRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str
    # Ollama's keep_alive: "30m", "-1" (for ever), or 0 to unload now.
    keep_alive: str | int


class PipelineEdit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    file: str
    text: str


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    error: str | None
    diff: str
    backup: str | None = None
    reloaded: bool = False


class Created(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    name: str
    prefix: str
    scopes: list[str]


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def overview_stream(request: Request) -> Response:
    services = _services(request)
    stream = overview.event_stream(services, services.config.console.overview_interval_s)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_SSE_HEADERS)


async def list_keys(request: Request) -> Response:
    return json_response(await _services(request).key_store.list(), headers=NO_STORE)


async def create_key(request: Request) -> Response:
    body = decode(await read_body(request, _MAX_BODY), msgspec.json.Decoder(NewKeyRequest))
    made = await _services(request).key_store.create(
        body.name, body.scopes, body.requests_per_minute, body.tokens_per_minute
    )
    record = made.record
    created = Created(key=made.key, name=record.name, prefix=record.prefix, scopes=list(record.scopes))
    return json_response(created, status=201, headers=NO_STORE)


async def revoke_key(request: Request) -> Response:
    body = decode(await read_body(request, _MAX_BODY), msgspec.json.Decoder(RevokeRequest))
    if not await _services(request).key_store.revoke(body.name):
        raise errors.NotFound(f"no live key named {body.name!r}")
    return json_response({"name": body.name, "revoked": True})


async def keep_model(request: Request) -> Response:
    """Load the model and keep it for `keep_alive` (or unload it with 0): Ollama's prompt-less generate."""
    services = _services(request)
    body = decode(await read_body(request, _MAX_BODY), msgspec.json.Decoder(KeepRequest))
    name = validate_name(body.model, registries=services.config.ollama.registries)
    payload = msgspec.json.encode({"model": name, "keep_alive": body.keep_alive, "stream": False})
    await services.upstream.fetch("POST", "/api/generate", payload, total_s=_LOAD_TIMEOUT_S)
    return json_response({"model": name, "keep_alive": body.keep_alive})


async def list_pipelines(request: Request) -> Response:
    config = _services(request).config
    return json_response(await asyncio.to_thread(pipelines.files, config), headers=NO_STORE)


async def _edit(request: Request) -> PipelineEdit:
    body = await read_body(request, _MAX_PIPELINE_BYTES)
    return decode(body, msgspec.json.Decoder(PipelineEdit))


async def check_pipeline(request: Request) -> Response:
    edit = await _edit(request)
    config = _services(request).config
    return json_response(await asyncio.to_thread(pipelines.check, config, edit.file, edit.text))


async def apply_pipeline(request: Request) -> Response:
    """Checked first: a file that would not load is never written. Then this worker reloads at once
    (its outcome is the answer), and the others through the parent's SIGHUP."""
    edit = await _edit(request)
    services = _services(request)
    checked = await asyncio.to_thread(pipelines.check, services.config, edit.file, edit.text)
    if not checked.ok:
        return json_response(Applied(ok=False, error=checked.error, diff=checked.diff), status=422)
    backup = await asyncio.to_thread(pipelines.write, services.config, edit.file, edit.text)
    reload: Callable[[], Awaitable[bool]] = request.state.reload
    reloaded = await reload()
    pipelines.signal_other_workers(services.metrics.multiprocess_dir is not None)
    applied = Applied(ok=True, error=None, diff=checked.diff, backup=str(backup), reloaded=reloaded)
    return json_response(applied)


def routes() -> list[Route]:
    return [
        Route("/api/overview", guard.data(overview_stream), methods=["GET"]),
        Route("/api/models", guard.data(models.list_models), methods=["GET"]),
        Route("/api/models/running", guard.data(models.running), methods=["GET"]),
        Route("/api/models/pull", guard.data(models.pull), methods=["POST"]),
        Route("/api/models/delete", guard.data(models.delete), methods=["POST"]),
        Route("/api/models/keep", guard.data(keep_model), methods=["POST"]),
        Route("/api/keys", guard.data(list_keys), methods=["GET"]),
        Route("/api/keys/create", guard.data(create_key), methods=["POST"]),
        Route("/api/keys/revoke", guard.data(revoke_key), methods=["POST"]),
        Route("/api/audit/conversations", guard.data(audit.list_conversations), methods=["GET"]),
        Route("/api/audit/conversations/{id}", guard.data(audit.get_conversation), methods=["GET"]),
        Route("/api/pipelines", guard.data(list_pipelines), methods=["GET"]),
        Route("/api/pipelines/check", guard.data(check_pipeline), methods=["POST"]),
        Route("/api/pipelines/apply", guard.data(apply_pipeline), methods=["POST"]),
        # {route:path}: a pipeline route such as v1/voice/chat/completions.
        Route("/api/playground/{route:path}", guard.data(playground.run_pipeline), methods=["POST"]),
    ]
