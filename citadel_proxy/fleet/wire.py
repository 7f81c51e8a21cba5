"""What GET /management/backends answers."""

from __future__ import annotations

import msgspec

from citadel_proxy.fleet.admission import Admission
from citadel_proxy.fleet.backend import Backend


class LoadedOn(msgspec.Struct, frozen=True):
    name: str
    size_vram: int


class BackendReport(msgspec.Struct, frozen=True):
    name: str
    url: str
    healthy: bool  # may take requests now (breaker closed, or its trial is due)
    breaker: str
    in_flight: int  # this worker's requests running there
    max_concurrent: int | None
    weight: int
    models_allowed: list[str] | None
    installed: list[str] | None  # None: not read yet
    loaded: list[LoadedOn]
    last_error: str | None
    last_error_at: float | None
    latency_ms: float | None
    inventory_at: float | None
    # Leases held in Redis by every worker of every gateway (null without Redis or without a limit).
    in_flight_everywhere: int | None = None


class QueueReport(msgspec.Struct, frozen=True):
    """One class (pipeline) in this worker's admission queues."""

    pipeline: str
    waiting: int
    wait_ms: float | None  # moving average of the wait of those that started


class BackendList(msgspec.Struct, frozen=True):
    data: list[BackendReport]
    object: str = "list"
    queues: list[QueueReport] = msgspec.field(default_factory=list)


def queues(admission: Admission) -> list[QueueReport]:
    names = sorted(set(admission.waiting) | set(admission.waited_s))
    return [
        QueueReport(
            name,
            admission.waiting.get(name, 0),
            round(admission.waited_s[name] * 1000, 2) if name in admission.waited_s else None,
        )
        for name in names
    ]


def report(backend: Backend, everywhere: int | None) -> BackendReport:
    return BackendReport(
        name=backend.name,
        url=backend.client.service.base_url,
        healthy=backend.breaker.available(),
        breaker=backend.breaker.state,
        in_flight=backend.in_flight,
        max_concurrent=backend.max_concurrent or None,
        weight=backend.weight,
        models_allowed=sorted(backend.allowed) if backend.allowed is not None else None,
        installed=sorted(backend.installed) if backend.installed is not None else None,
        loaded=[LoadedOn(name, vram) for name, vram in sorted(backend.loaded.items())],
        last_error=backend.last_error or None,
        last_error_at=backend.last_error_at,
        latency_ms=round(backend.latency_ms, 2) if backend.latency_ms is not None else None,
        inventory_at=backend.inventory_at,
        in_flight_everywhere=everywhere,
    )
