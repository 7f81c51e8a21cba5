"""The fleet's series, labelled by backend."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from citadel_proxy.observability.metrics import TTFT_BUCKETS
from citadel_proxy.observability.tally import CounterTally, GaugeTally, HistogramTally, Tally


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry, tally: Tally | None = None) -> None:
        """`tally`: the app's (`Metrics.tally`), which the app folds; else one of its own, folded when
        the registry is collected."""
        if tally is None:
            tally = Tally()
            registry.register(tally)
        # What each request counts goes through the tally (observability/tally.py); the rare ones
        # (breaker changes, queue refusals) straight to the series.
        self.tally = tally
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
        self._queue_waits: dict[str, HistogramTally] = {}

    def queue_wait_of(self, pipeline: str) -> HistogramTally:
        """The pipeline's tally of `queue_wait`, bound once: `labels()` costs more than `observe()`."""
        child = self._queue_waits.get(pipeline)
        if child is None:
            child = self._queue_waits[pipeline] = self.tally.histogram(self.queue_wait.labels(pipeline))
        return child


@dataclass(frozen=True, slots=True)
class BackendSeries:
    """One backend's children of the fleet's series, bound once: `labels()` costs more than `inc()`."""

    ok: CounterTally
    failed: CounterTally
    refused: CounterTally
    in_flight: GaugeTally
    failovers: CounterTally
    time_to_first_token: HistogramTally

    @classmethod
    def of(cls, metrics: FleetMetrics, name: str) -> BackendSeries:
        tally = metrics.tally
        return cls(
            ok=tally.counter(metrics.requests.labels(name, "ok")),
            failed=tally.counter(metrics.requests.labels(name, "failed")),
            refused=tally.counter(metrics.requests.labels(name, "refused")),
            in_flight=tally.gauge(metrics.in_flight.labels(name)),
            failovers=tally.counter(metrics.failovers.labels(name)),
            time_to_first_token=tally.histogram(metrics.time_to_first_token.labels(name)),
        )
