"""The playground: a prompt through a chosen pipeline, authorised by the console session.

The browser holds no API key: a key in page memory is one script injection away from leaving the
machine, and a short-lived key would still be a bearer secret, minted per visit. Instead the request
rides the HttpOnly session cookie and its CSRF token, and runs the pipeline as the signed-in key
(looked up afresh on every call by the console's guard, so a revoked key stops at once): audit
records, logs and rate limits name that key, as if it had called the route itself.
"""

from __future__ import annotations

import dataclasses

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from citadel_proxy import errors
from citadel_proxy.pipeline.types import Principal
from citadel_proxy.routes import inference
from citadel_proxy.services import Services


async def run_pipeline(request: Request) -> Response | ASGIApp:
    """POST /console/api/playground/<pipeline route>: the body is the route's own request body."""
    services: Services = request.state.services
    route = "/" + request.path_params["route"]
    built = services.pipelines.current.by_route.get(route)
    if built is None or built.spec.format == "embeddings":
        raise errors.NotFound(f"no chat or completion pipeline serves {route}")
    # Checked live by the console's guard on this very request (guard.live_principal).
    principal: Principal = request.state.console_principal

    async def admit(_headers: object) -> Principal:
        return principal

    return await inference.run(request, services, dataclasses.replace(built, admit=admit), route)
