"""`GET /v1/models/{id}` and an agent profile's `GET /v1/<profile>/models[/{id}]`, in OpenAI's Model shape.

A client given `/v1/<profile>` as its base URL lists and retrieves models there as it would under `/v1`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.http.responses import json_response
from citadel_proxy.routes.health import ModelCard, list_models
from citadel_proxy.services import Services


async def retrieve_model(request: Request) -> Response:
    services: Services = request.state.services
    name: str = request.path_params["model"]
    # The names /v1/models lists, and those a request may use (`phi3` for `phi3:latest`); else 404.
    target = services.models.resolve(name)
    card = ModelCard(id=name, created=int(services.started_at), owned_by="citadel", target=target)
    return json_response(card)


async def profile_models(request: Request) -> Response:
    _check_profile(request)
    return await list_models(request)


async def profile_model(request: Request) -> Response:
    _check_profile(request)
    return await retrieve_model(request)


def _check_profile(request: Request) -> None:
    services: Services = request.state.services
    name: str = request.path_params["profile"]
    agents = services.pipelines.current.agents
    if name not in agents:
        known = ", ".join(sorted(agents)) or "none configured"
        raise errors.NotFound(f"no agent profile named {name!r} (known: {known})")
