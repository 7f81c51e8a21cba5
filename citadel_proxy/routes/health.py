"""`GET /health` (per-component checks) and `GET /v1/models` (the configured models, OpenAI's shape)."""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.http.responses import json_response
from citadel_proxy.services import Services

_PROBE_TIMEOUT_S = 3.0


class Check(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str
    latency_ms: float | None = None
    detail: str | None = None


class Health(msgspec.Struct, frozen=True):
    status: str
    checks: dict[str, Check]


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str
    target: str
    object: str = "model"


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


async def check_upstream(services: Services) -> Check:
    started = time.perf_counter()
    try:
        await services.upstream.fetch("GET", "/api/version", total_s=_PROBE_TIMEOUT_S)
    except errors.GatewayError as exc:
        return Check("down", detail=exc.message)
    return Check("ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def health(request: Request) -> Response:
    services: Services = request.state.services
    checks = {"ollama": await check_upstream(services)}
    services.metrics.set_upstream_up(checks["ollama"].status == "ok")
    # Without Ollama nothing can be answered: that makes the gateway unable to serve, not degraded.
    serving = checks["ollama"].status == "ok"
    status = "ok" if serving else "unavailable"
    return json_response(Health(status, checks), status=200 if serving else 503)


async def list_models(request: Request) -> Response:
    services: Services = request.state.services
    created = int(services.started_at)
    cards = [
        ModelCard(id=name, created=created, owned_by="citadel", target=target)
        for name, target in sorted(services.models.routes.items())
    ]
    return json_response(ModelList(cards))
