"""`GET /metrics`: the Prometheus exposition of every worker's series, to whom `monitoring.prometheus` allows.

The series name models, routes, key names' traffic and error rates: clients in `allow` (the address
after `gateway.trusted_proxies`) read them as they are; anyone else needs a key with the `metrics` (or
`admin`) scope, or is refused outright when `allow_keys` is false.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.auth.guard import identify, missing_key
from citadel_proxy.auth.keys import ADMIN, METRICS
from citadel_proxy.config.schema import Prometheus
from citadel_proxy.http.forwarded import networks
from citadel_proxy.observability.metrics import CONTENT_TYPE, Metrics

Endpoint = Callable[[Request], Awaitable[Response]]


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.state.services.metrics
    if metrics.multiprocess_dir is None:
        body = metrics.exposition()
    else:
        # This worker's latest counts into its file first: only the loop's thread may fold them.
        metrics.tally.fold()
        # Merging reads one file per worker and metric kind: keep that disk work off the event loop.
        body = await run_in_threadpool(metrics.exposition)
    return Response(body, headers={"Content-Type": CONTENT_TYPE})


def guarded_metrics(settings: Prometheus, endpoint: Endpoint = metrics_endpoint) -> Endpoint:
    allowed = networks(settings.allow)

    def in_allowed_network(request: Request) -> bool:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in allowed)

    @functools.wraps(endpoint)
    async def guarded_endpoint(request: Request) -> Response:
        if not in_allowed_network(request):
            await _require_metrics_key(request, settings.allow_keys)
        return await endpoint(request)

    return guarded_endpoint


async def _require_metrics_key(request: Request, allow_keys: bool) -> None:
    if not allow_keys:
        raise errors.PermissionDenied(
            "/metrics is only reachable from the networks in monitoring.prometheus.allow",
            code="forbidden_network",
        )
    principal = await identify(request.state.services.key_store, request.headers)
    if principal is None:
        raise missing_key()
    if not principal.scopes & {METRICS, ADMIN}:
        raise errors.PermissionDenied(
            f"The API key {principal.name!r} has neither the 'metrics' nor the 'admin' scope."
        )
