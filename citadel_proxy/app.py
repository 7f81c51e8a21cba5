"""`create_app(config)`: the Starlette application, its routes and the lifespan that owns every resource."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route

from citadel_proxy import errors
from citadel_proxy.config.models import ModelRouter
from citadel_proxy.config.schema import Config
from citadel_proxy.http.responses import on_gateway_error, on_http_error, on_unexpected
from citadel_proxy.pipeline import table
from citadel_proxy.pipeline.spec import PipelineSet, load_pipelines
from citadel_proxy.routes import health, inference
from citadel_proxy.services import Services
from citadel_proxy.stages.registry import stage_types
from citadel_proxy.upstream.client import OllamaClient
from citadel_proxy.upstream.terminal import upstream_handler


def load_pipeline_set(config: Config) -> PipelineSet:
    return load_pipelines(Path(config.paths.pipelines), stage_types(), config.gateway.timeout)


def public_routes(pipelines: PipelineSet) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/v1/models", health.list_models, methods=["GET"]),
        Route("/v1/agents/stream", inference.agent_stream, methods=["POST"]),
    ]
    routes += [Route(path, inference.pipeline_route, methods=["POST"]) for path in sorted(pipelines.by_route)]
    return routes


def management_routes() -> list[BaseRoute]:
    """Everything here requires the `admin` scope, whatever the pipelines say."""
    return []


def create_app(config: Config, pipelines: PipelineSet | None = None) -> Starlette:
    pipelines = pipelines if pipelines is not None else load_pipeline_set(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Services]]:
        async with contextlib.AsyncExitStack() as stack:
            upstream = OllamaClient(config.ollama.service)
            await upstream.open()
            stack.push_async_callback(upstream.close)
            services = Services(
                config=config,
                upstream=upstream,
                models=ModelRouter.from_config(config),
                pipelines=table.PipelineTable(),
            )
            services.pipelines.install(table.build(pipelines, services, upstream_handler(upstream)))
            yield {"services": services}

    middleware = []
    cors = config.gateway.cors
    if cors.enabled:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors.origins,
                allow_methods=cors.methods,
                allow_headers=cors.headers,
                allow_credentials=cors.allow_credentials,
            )
        )
    return Starlette(
        routes=public_routes(pipelines) + management_routes(),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            errors.GatewayError: on_gateway_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
