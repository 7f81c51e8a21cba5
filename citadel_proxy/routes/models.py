"""Model management endpoints (admin only; app.py wraps each with `admin_only`).

GET  /management/models/list            Ollama's models, with whether each is configured, and aliases
POST /management/models/pull            {"model": NAME, "backend"?: NAME} -> NDJSON progress (PullEvent lines)
POST /management/models/delete          {"model": NAME, "backend"?: NAME} (no backend: every backend)
GET  /management/models/{name}/info     details, capabilities, context length
GET  /management/models/configured      the YAML's models and aliases, with whether Ollama has them
GET  /management/models/running         the models loaded in memory (Ollama's /api/ps)
GET  /management/system/ollama-status   reachable, version, latency, loaded models (always 200)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from citadel_proxy import errors
from citadel_proxy.fleet import manage
from citadel_proxy.fleet.backend import Backend
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.responses import NO_STORE, json_response
from citadel_proxy.management import catalog, ollama, pulls
from citadel_proxy.management.names import validate_name
from citadel_proxy.management.wire import Deleted, DeletedOn, LoadedList, ModelInfo, ModelRequest, PullEvent
from citadel_proxy.services import Services

_MAX_BODY = 64 * 1024
_START_TIMEOUT_S = 30.0
# Below nginx's 60 s read timeout on /management/ (nginx/citadel-proxy.conf).
_HEARTBEAT_S = 15.0
_NDJSON_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_request_decoder = msgspec.json.Decoder(ModelRequest)
_encode = msgspec.json.Encoder().encode


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


async def _model_from_body(request: Request) -> tuple[str, list[Backend]]:
    """The model named, and the backends the call is for (every one unless `backend` names one)."""
    body = decode(await read_body(request, _MAX_BODY), _request_decoder)
    services = _services(request)
    name = validate_name(body.model, registries=services.config.ollama.registries)
    return name, manage.targets(services.fleet, body.backend)


async def list_models(request: Request) -> Response:
    services = _services(request)
    models, where, failed = await manage.merged_tags(services.fleet)
    return json_response(catalog.installed(services.config, models, where, failed), headers=NO_STORE)


async def configured(request: Request) -> Response:
    services = _services(request)
    try:
        models = await ollama.tags(services.upstream)
    except errors.GatewayError as exc:
        # The YAML's part is worth having while Ollama is down; presence is then unknown (null).
        return json_response(catalog.configured(services.config, None, exc.message), headers=NO_STORE)
    return json_response(catalog.configured(services.config, models, None), headers=NO_STORE)


async def running(request: Request) -> Response:
    models = [ollama.loaded(m) for m in await ollama.running(_services(request).upstream)]
    return json_response(LoadedList(models=models, count=len(models)), headers=NO_STORE)


async def info(request: Request) -> Response:
    services = _services(request)
    name = validate_name(
        request.path_params["name"], param="name", registries=services.config.ollama.registries
    )
    reply = await ollama.show(services.upstream, name)
    architecture, context_length, parameter_count = ollama.model_facts(reply)
    body = ModelInfo(
        name=name,
        architecture=architecture,
        context_length=context_length,
        parameter_count=parameter_count,
        capabilities=reply.capabilities or [],
        details=reply.details,
        parameters=reply.parameters,
        template=reply.template,
        system=reply.system,
        license=reply.license,
        modified_at=reply.modified_at,
        model_info=reply.model_info or {},
    )
    return json_response(body, headers=NO_STORE)


async def delete(request: Request) -> Response:
    name, chosen = await _model_from_body(request)
    fleet = _services(request).fleet
    deleted = await manage.delete(fleet, chosen, name)
    return json_response(DeletedOn(model=name, backends=deleted) if fleet.several else Deleted(model=name))


async def pull(request: Request) -> Response:
    """Starts the pull (or joins the one running) in the app's PullManager; this response only watches it,
    so the pull goes on if the client leaves. Errors before Ollama accepts it keep their HTTP status."""
    name, chosen = await _model_from_body(request)
    services = _services(request)
    fleet = services.fleet
    jobs = [(b, (services.pulls if b is fleet.default else fleet.pulls[b.name]).pull(name)) for b in chosen]
    try:
        await asyncio.gather(*(job.wait_started(_START_TIMEOUT_S) for _, job in jobs))
    except TimeoutError:
        raise errors.DeadlineExceeded(
            f"Ollama has not started pulling '{name}' after {_START_TIMEOUT_S:g} s; "
            "the request to it stays open in the background"
        ) from None
    if not fleet.several:
        events = pulls.events(jobs[0][1], _HEARTBEAT_S)
    else:
        events = manage.merged_events(fleet, jobs, _HEARTBEAT_S)
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson", headers=_NDJSON_HEADERS)


async def _ndjson(events: AsyncIterator[PullEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield _encode(event) + b"\n"


async def status(request: Request) -> Response:
    report = await manage.status(_services(request).fleet)
    return json_response(report, headers=NO_STORE)
