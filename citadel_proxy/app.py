"""`create_app(config)`: the ASGI application (http.front before Starlette), its routes and the lifespan
that owns every resource."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from citadel_proxy import errors
from citadel_proxy.audit.metrics import export_audit_metrics
from citadel_proxy.audit.service import open_audit
from citadel_proxy.auth.bootstrap import bootstrap_admin_key
from citadel_proxy.auth.failures import FailedAuthLimiter
from citadel_proxy.auth.guard import admin_only, any_key
from citadel_proxy.auth.store import open_key_store
from citadel_proxy.cache.service import open_cache
from citadel_proxy.config.models import ModelRouter
from citadel_proxy.config.schema import Config, Prometheus
from citadel_proxy.console.app import console_routes
from citadel_proxy.embeddings.terminal import with_embeddings
from citadel_proxy.fleet.fleet import first_backend_url, open_fleet
from citadel_proxy.health.watch import UpstreamWatch, watch_in_background
from citadel_proxy.http.forwarded import TrustedProxies
from citadel_proxy.http.front import Endpoint, Front
from citadel_proxy.http.responses import on_gateway_error, on_http_error, on_unexpected
from citadel_proxy.management.pulls import open_pull_manager
from citadel_proxy.observability.logs import configure_logging
from citadel_proxy.observability.metrics import open_metrics
from citadel_proxy.observability.metrics_port import serve_metrics_port
from citadel_proxy.observability.refusals import open_refusals
from citadel_proxy.observability.tracing import open_tracing
from citadel_proxy.pipeline import table
from citadel_proxy.pipeline.spec import PipelineSet, load_pipelines
from citadel_proxy.preload import preload_models
from citadel_proxy.ratelimit import open_rate_limiter
from citadel_proxy.redis_client import open_redis
from citadel_proxy.reload import reload_on_sighup, reload_pipelines
from citadel_proxy.routes import (
    anthropic_messages,
    backends,
    formats,
    health,
    inference,
    models,
    ollama_native,
    openai_models,
    system,
)
from citadel_proxy.routes import audit as audit_routes
from citadel_proxy.routes.metrics import guarded_metrics
from citadel_proxy.services import Services
from citadel_proxy.stages.registry import stage_types
from citadel_proxy.system.gpu import open_gpu_probe
from citadel_proxy.system.resources import open_resource_sampler
from citadel_proxy.timeouts import TimeoutSweeper
from citadel_proxy.upstream.terminal import upstream_handler

# Allocations between young-generation collections (CPython's default is 700).
_GC_YOUNG_THRESHOLD = 20_000
# Young collections between middle-generation ones (CPython's default is 10). Only a net growth of
# objects triggers a collection (requests and streams that end free theirs by reference count), so
# collections come when streams open faster than they close. Their survivors wait in the middle
# generation until a middle collection traverses them all at once and promotes them: one every 2 young
# collections traverses two young collections' survivors, where one every 20 traversed a whole ramp's
# (README, "Performance").
_GC_MIDDLE_THRESHOLD = 2


def tune_garbage_collector() -> None:
    """Everything loaded at start (modules, config, clients) lives as long as the worker: moving it out
    of the collector's sight, and collecting the young generation less often, removes the ~40 ms full
    collections that otherwise stall every request in flight about once a second under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, _GC_MIDDLE_THRESHOLD, 20)


def load_pipeline_set(config: Config) -> PipelineSet:
    return load_pipelines(Path(config.paths.pipelines), stage_types(), config.gateway.timeout)


def public_routes(pipelines: PipelineSet, prometheus: Prometheus) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/v1/models", any_key(health.list_models), methods=["GET"]),
        # {model:path}: names such as `namespace/model:tag` hold slashes.
        Route("/v1/models/{model:path}", any_key(openai_models.retrieve_model), methods=["GET"]),
        Route("/v1/agents/stream", inference.agent_stream, methods=["POST"]),
    ]
    if prometheus.enabled and prometheus.port is None:
        # Allowed networks, else a `metrics` key: routes/metrics.py.
        routes.append(Route("/metrics", guarded_metrics(prometheus), methods=["GET"]))
    for path in sorted(pipelines.by_route):
        routes.append(Route(path, formats.endpoint_of(pipelines.by_route[path].format), methods=["POST"]))
    # Ollama's own model routes, for its clients (routes/ollama_native.py; pull and delete need admin).
    routes += [Route(path, endpoint, methods=methods) for path, endpoint, methods in ollama_native.routes()]
    routes.append(Route("/v1/messages/count_tokens", anthropic_messages.count_tokens, methods=["POST"]))
    # Every agent profile as an OpenAI base URL (/v1/<profile>); after the pipelines' own routes.
    return [*routes, *profile_routes()]


def profile_routes() -> list[BaseRoute]:
    return [
        Route("/v1/{profile}/models", any_key(openai_models.profile_models), methods=["GET"]),
        Route("/v1/{profile}/models/{model:path}", any_key(openai_models.profile_model), methods=["GET"]),
        # POSTs are served by http.front (fast_profile_routes); listed so other methods get a 405.
        Route("/v1/{profile}/chat/completions", inference.profile_route, methods=["POST"]),
        Route("/v1/{profile}/completions", inference.profile_route, methods=["POST"]),
    ]


def management_routes() -> list[BaseRoute]:
    """Everything here requires the `admin` scope, whatever the pipelines say."""
    return [
        Route("/management/system/resources", admin_only(system.resources), methods=["GET"]),
        Route("/management/system/storage-usage", admin_only(system.storage), methods=["GET"]),
        *audit_routes.routes(wrap=admin_only),
        Route("/management/system/ollama-status", admin_only(models.status), methods=["GET"]),
        Route("/management/backends", admin_only(backends.backends), methods=["GET"]),
        Route("/management/models/list", admin_only(models.list_models), methods=["GET"]),
        Route("/management/models/configured", admin_only(models.configured), methods=["GET"]),
        Route("/management/models/running", admin_only(models.running), methods=["GET"]),
        Route("/management/models/pull", admin_only(models.pull), methods=["POST"]),
        Route("/management/models/delete", admin_only(models.delete), methods=["POST"]),
        # {name:path}: names such as `namespace/model:tag` hold slashes.
        Route("/management/models/{name:path}/info", admin_only(models.info), methods=["GET"]),
    ]


def fast_routes(pipelines: PipelineSet) -> dict[str, Endpoint]:
    """The inference routes, served by http.front without Starlette's router (also listed in
    public_routes, so other methods on them get Starlette's 405)."""
    fast: dict[str, Endpoint] = {"/v1/agents/stream": inference.agent_stream}
    for path, spec in pipelines.by_route.items():
        if formats.is_fast(spec.format):
            fast[path] = formats.endpoint_of(spec.format)
    return fast


def fast_profile_routes(pipelines: PipelineSet) -> Callable[[str], Endpoint | None]:
    """The inference routes of agent profiles (`/v1/<profile>/chat/completions`), for http.front; a path
    a pipeline file names stays that pipeline's (an embeddings route may end in /completions)."""
    named = frozenset(pipelines.by_route)

    def endpoint(path: str) -> Endpoint | None:
        return inference.profile_route if path not in named and inference.is_profile_path(path) else None

    return endpoint


def create_app(
    config: Config, pipelines: PipelineSet | None = None, *, config_file: Path | None = None
) -> ASGIApp:
    """The gateway; `config_file` (where `config` was read from) is checked again on each SIGHUP."""
    pipelines = pipelines if pipelines is not None else load_pipeline_set(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with contextlib.AsyncExitStack() as stack:
            configure_logging(
                config.monitoring.logging,
                log_dir=config.paths.logs,
                level=config.log_level,
                identity={"service": config.project.name, "environment": config.project.environment},
            )
            # Opened first so it closes last: its queue drains while everything else is still there.
            audit = await open_audit(config, stack)
            key_store = await open_key_store(config, stack)
            await bootstrap_admin_key(config, key_store)
            metrics = await open_metrics(config, stack)
            redis = await open_redis(config, stack)
            # The first backend is the one the one-Ollama paths (status probes, pulls) talk to.
            watch = UpstreamWatch(metrics, first_backend_url(config))
            fleet = await open_fleet(config, stack, metrics, redis, watch.observe)
            upstream = fleet.default.client
            await watch_in_background(watch, upstream, config.monitoring.health_checks, stack)
            await preload_models(config, upstream, stack)
            services = Services(
                config=config,
                upstream=upstream,
                models=ModelRouter.from_config(config),
                pipelines=table.PipelineTable(),
                metrics=metrics,
                resource_sampler=await open_resource_sampler(config, stack),
                gpu_probe=await open_gpu_probe(config, stack),
                key_store=key_store,
                rate_limiter=await open_rate_limiter(config, stack),
                audit=audit,
                pulls=await open_pull_manager(upstream, stack),
                cache=await open_cache(config, stack, metrics.registry, client=redis),
                deadlines=TimeoutSweeper(),
                refusals=await open_refusals(config.audit, audit, metrics, stack),
                failed_auth=FailedAuthLimiter(
                    config.auth.failed_auth_limit,
                    config.auth.failed_auth_window_s,
                    config.auth.failed_auth_max_clients,
                ),
                tracing=await open_tracing(config, stack),
                fleet=fleet,
            )
            stack.callback(services.deadlines.close)
            await export_audit_metrics(services.metrics.registry, audit, stack)
            terminal = with_embeddings(
                upstream_handler(fleet, lambda name: services.models.resolve(name)), fleet
            )
            services.pipelines.install(table.build(pipelines, services, terminal))
            reload = functools.partial(
                reload_pipelines,
                services,
                functools.partial(load_pipeline_set, config),
                terminal,
                config_file,
            )
            stack.enter_context(reload_on_sighup(reload))
            await serve_metrics_port(config, services, stack)
            tune_garbage_collector()
            # `reload`: the console's pipeline editor reloads this worker directly (console/pipelines.py).
            yield {"services": services, "reload": reload}

    routed = Starlette(
        routes=[
            *public_routes(pipelines, config.monitoring.prometheus),
            *management_routes(),
            # Signed-in operators only, by session cookie: citadel_proxy/console.
            *console_routes(config),
        ],
        lifespan=lifespan,
        exception_handlers={
            errors.GatewayError: on_gateway_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    front = Front(
        routed,
        TrustedProxies(config.gateway.trusted_proxies),
        fast_routes(pipelines),
        fast_profile_routes(pipelines),
    )
    cors = config.gateway.cors
    if not cors.enabled:
        return front
    # Outermost, so both ways in answer browsers alike (preflights are answered here, before any route).
    return CORSMiddleware(
        front,
        allow_origins=cors.origins,
        allow_methods=cors.methods,
        allow_headers=cors.headers,
        allow_credentials=cors.allow_credentials,
        expose_headers=cors.expose_headers,
    )
