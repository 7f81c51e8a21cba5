"""`GET /health` (per-component checks) and `GET /v1/models` (the configured models, OpenAI's shape).

`/health` is public (load balancers, nginx's health checks): it shows each component's status only.
Latencies and details name internal hosts, ports and driver errors, so only an `admin` key sees them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.auth.guard import identify
from citadel_proxy.auth.keys import ADMIN
from citadel_proxy.config.schema import Database
from citadel_proxy.config.schema import Redis as RedisSettings
from citadel_proxy.health.probes import ProbeFailed, elapsed_ms, probe_database, probe_redis
from citadel_proxy.http.responses import json_response
from citadel_proxy.services import Services
from citadel_proxy.upstream.client import OllamaClient

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
    """Ok while any backend answers: the gateway can serve what that one has."""
    fleet = services.fleet
    checks = await asyncio.gather(*(_check_client(b.client) for b in fleet.backends))
    up = [check for check in checks if check.status == "ok"]
    if not fleet.several:
        return checks[0]
    down = "; ".join(f"{b.name}: {c.detail}" for b, c in zip(fleet.backends, checks, strict=True) if c.detail)
    if not up:
        return Check("down", detail=down)
    return Check("ok", latency_ms=min(c.latency_ms or 0.0 for c in up), detail=down or None)


async def _check_client(client: OllamaClient) -> Check:
    started = time.perf_counter()
    try:
        await client.fetch("GET", "/api/version", total_s=_PROBE_TIMEOUT_S)
    except errors.GatewayError as exc:
        return Check("down", detail=exc.detail or exc.message)
    return Check("ok", latency_ms=elapsed_ms(started))


async def _probed(probe: Awaitable[float]) -> Check:
    try:
        return Check("ok", latency_ms=await probe)
    except ProbeFailed as exc:
        return Check("down", detail=str(exc))


async def check_database(database: Database) -> Check:
    return await _probed(probe_database(database, _PROBE_TIMEOUT_S))


async def check_redis(settings: RedisSettings) -> Check:
    return await _probed(probe_redis(settings, _PROBE_TIMEOUT_S))


def check_audit(services: Services) -> Check:
    counts = services.audit.snapshot()
    waiting = services.audit.spool_waiting
    if counts["lost"]:
        return Check("down", detail=f"{counts['lost']} audit records could not be stored or spooled")
    # With durability spool every record passes through the spool: a backlog is a problem only while
    # PostgreSQL fails to take it.
    if waiting and services.audit.database_failing:
        return Check("degraded", detail=f"{waiting} records wait in the spool for the audit store")
    return Check("ok", detail=f"queue {counts['queue_depth']}")


async def _shows_details(request: Request, services: Services) -> bool:
    """True for an `admin` key; a key that is presented but unknown is refused (401), as everywhere."""
    principal = await identify(services.key_store, request.headers)
    return principal is not None and ADMIN in principal.scopes


def _shown(checks: dict[str, Check], detailed: bool) -> dict[str, Check]:
    return checks if detailed else {name: Check(check.status) for name, check in checks.items()}


async def probe_backends(services: Services) -> dict[str, Check]:
    """Ollama, and PostgreSQL and Redis where configured, probed together."""
    config = services.config
    probes: dict[str, Awaitable[Check]] = {"ollama": check_upstream(services)}
    if config.database is not None:
        probes["database"] = check_database(config.database)
    if config.redis is not None:
        probes["redis"] = check_redis(config.redis)
    results = await asyncio.gather(*probes.values())
    return dict(zip(probes, results, strict=True))


async def health(request: Request) -> Response:
    services: Services = request.state.services
    detailed = await _shows_details(request, services)
    max_age_s = services.config.monitoring.health_checks.max_age_s
    checks = dict(await services.health_probes.get(lambda: probe_backends(services), max_age_s))
    checks["audit"] = check_audit(services)
    services.metrics.set_upstream_up(checks["ollama"].status == "ok")
    # Without Ollama nothing can be answered: the gateway cannot serve. Without PostgreSQL or Redis it
    # still serves (audit spools to disk, limits and cache fall back in process): degraded.
    if checks["ollama"].status != "ok":
        return json_response(Health("unavailable", _shown(checks, detailed)), status=503)
    degraded = any(check.status != "ok" for check in checks.values())
    return json_response(Health("degraded" if degraded else "ok", _shown(checks, detailed)))


async def list_models(request: Request) -> Response:
    services: Services = request.state.services
    created = int(services.started_at)
    cards = [
        ModelCard(id=name, created=created, owned_by="citadel", target=target)
        for name, target in sorted(services.models.routes.items())
    ]
    return json_response(ModelList(cards))
