"""GET /management/backends: every Ollama server's health, breaker, load and models (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.fleet.wire import BackendList, report
from citadel_proxy.http.responses import NO_STORE, json_response
from citadel_proxy.services import Services


async def backends(request: Request) -> Response:
    services: Services = request.state.services
    fleet = services.fleet
    if not fleet.several:
        # One Ollama has no inventory loop: read it now, so the report says what it holds.
        await fleet.refresh()
    return json_response(BackendList([report(b) for b in fleet.backends]), headers=NO_STORE)
