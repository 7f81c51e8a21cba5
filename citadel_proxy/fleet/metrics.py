"""The fleet's series, labelled by backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from citadel_proxy.observability.metrics import TTFT_BUCKETS


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "citadel_backend_requests_total",
            "Requests sent to each backend, by how the attempt ended (ok, failed, refused).",
            ["backend", "outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "citadel_backend_in_flight",
            "Requests running on each backend now.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.failovers = Counter(
            "citadel_backend_failovers_total",
            "Requests moved to another backend after this one failed before answering.",
            ["backend"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "citadel_backend_breaker_transitions_total",
            "Circuit breaker changes per backend, by the state entered.",
            ["backend", "state"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "citadel_backend_time_to_first_token_seconds",
            "Time from the request's arrival to the backend's first token.",
            ["backend"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "citadel_queue_wait_seconds",
            "Time a request waited in the gateway's queue for a backend slot, by pipeline (its class).",
            ["pipeline"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.queue_refused = Counter(
            "citadel_queue_refused_total",
            "Requests refused because the queue would not start them in time, by pipeline.",
            ["pipeline"],
            registry=registry,
        )
        self._queue_waits: dict[str, Any] = {}

    def queue_wait_of(self, pipeline: str) -> Any:
        """The pipeline's child of `queue_wait`, bound once: `labels()` costs more than `observe()`."""
        child = self._queue_waits.get(pipeline)
        if child is None:
            child = self._queue_waits[pipeline] = self.queue_wait.labels(pipeline)
        return child


@dataclass(frozen=True, slots=True)
class BackendSeries:
    """One backend's children of the fleet's series, bound once: `labels()` costs more than `inc()`."""

    ok: Any
    failed: Any
    refused: Any
    in_flight: Any
    failovers: Any
    time_to_first_token: Any

    @classmethod
    def of(cls, metrics: FleetMetrics, name: str) -> BackendSeries:
        return cls(
            ok=metrics.requests.labels(name, "ok"),
            failed=metrics.requests.labels(name, "failed"),
            refused=metrics.requests.labels(name, "refused"),
            in_flight=metrics.in_flight.labels(name),
            failovers=metrics.failovers.labels(name),
            time_to_first_token=metrics.time_to_first_token.labels(name),
        )
