"""GET /management/backends: every Ollama server's health, breaker, load and models (admin only)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.fleet.wire import BackendList, queues, report
from citadel_proxy.http.responses import NO_STORE, json_response
from citadel_proxy.services import Services


async def backends(request: Request) -> Response:
    services: Services = request.state.services
    fleet = services.fleet
    if not fleet.several:
        # One Ollama has no inventory loop: read it now, so the report says what it holds.
        await fleet.refresh()
    counts = await asyncio.gather(*(fleet.slots.everywhere(b) for b in fleet.backends))
    reports = [report(b, n) for b, n in zip(fleet.backends, counts, strict=True)]
    return json_response(BackendList(reports, queues=queues(fleet.admission)), headers=NO_STORE)
