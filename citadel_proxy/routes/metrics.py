"""`GET /metrics`: the Prometheus exposition of every worker's series."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy.observability.metrics import CONTENT_TYPE, Metrics


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.state.services.metrics
    if metrics.multiprocess_dir is None:
        body = metrics.exposition()
    else:
        # Merging reads one file per worker and metric kind: keep that disk work off the event loop.
        body = await run_in_threadpool(metrics.exposition)
    return Response(body, headers={"Content-Type": CONTENT_TYPE})
