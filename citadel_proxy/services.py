"""The resources one worker holds, opened in the app's lifespan and handed to routes and stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from citadel_proxy.audit.sink import AuditSink
from citadel_proxy.auth.failures import FailedAuthLimiter
from citadel_proxy.auth.store import KeyStore
from citadel_proxy.cache.service import Cache
from citadel_proxy.config.models import ModelRouter
from citadel_proxy.config.schema import Config
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.health.shared import SharedResult
from citadel_proxy.management.pulls import PullManager
from citadel_proxy.observability.metrics import Metrics
from citadel_proxy.observability.refusals import Refusals
from citadel_proxy.observability.tracing import RequestTracer
from citadel_proxy.pipeline.table import PipelineTable
from citadel_proxy.ratelimit import RateLimiter
from citadel_proxy.system.gpu import GpuProbe
from citadel_proxy.system.resources import ResourceSampler
from citadel_proxy.timeouts import TimeoutSweeper
from citadel_proxy.upstream.client import OllamaClient

if TYPE_CHECKING:
    from citadel_proxy.routes.health import Check


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    upstream: OllamaClient
    models: ModelRouter
    pipelines: PipelineTable
    metrics: Metrics
    resource_sampler: ResourceSampler
    gpu_probe: GpuProbe
    key_store: KeyStore
    rate_limiter: RateLimiter
    audit: AuditSink
    pulls: PullManager
    cache: Cache
    deadlines: TimeoutSweeper  # the open streams' pipeline deadlines
    refusals: Refusals  # requests refused before their pipeline: counted, logged, audited
    failed_auth: FailedAuthLimiter
    fleet: Fleet  # every Ollama server; `upstream` is its first backend's client
    started_at: float = field(default_factory=time.time)
    # /health's probes of Ollama, PostgreSQL and Redis, shared for monitoring.health_checks.max_age_s.
    health_probes: SharedResult[dict[str, Check]] = field(default_factory=SharedResult)
    tracing: RequestTracer | None = None  # monitoring.tracing; None when disabled
