"""Management endpoints that observe the host: `/management/system/resources` and `.../storage-usage`."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.http.responses import NO_STORE, json_response
from citadel_proxy.system.resources import collect_resources
from citadel_proxy.system.storage import storage_paths, storage_usage


async def resources(request: Request) -> Response:
    services = request.state.services
    report = await collect_resources(services.resource_sampler, services.gpu_probe)
    return json_response(report, headers=NO_STORE)


async def storage(request: Request) -> Response:
    services = request.state.services
    paths = storage_paths(services.config, os.environ)
    report = await storage_usage(paths)
    return json_response(report, headers=NO_STORE)
