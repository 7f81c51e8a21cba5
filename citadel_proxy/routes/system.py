"""Management endpoints that observe the host: `/management/system/resources` and `.../storage-usage`."""

from __future__ import annotations

import os

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.system.resources import collect_resources
from citadel_proxy.system.storage import storage_paths, storage_usage

_encode = msgspec.json.Encoder().encode
# Figures change from one second to the next: a proxy must not serve yesterday's.
_HEADERS = {"Cache-Control": "no-store"}


async def resources(request: Request) -> Response:
    services = request.state.services
    report = await collect_resources(services.resource_sampler, services.gpu_probe)
    return Response(_encode(report), media_type="application/json", headers=_HEADERS)


async def storage(request: Request) -> Response:
    services = request.state.services
    paths = storage_paths(services.config, os.environ)
    report = await storage_usage(paths)
    return Response(_encode(report), media_type="application/json", headers=_HEADERS)
