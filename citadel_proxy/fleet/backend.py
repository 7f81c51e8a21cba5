"""One Ollama server as the gateway sees it: its client, what it holds, its breaker and its load."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from citadel_proxy.config.schema import Backend as BackendConfig
from citadel_proxy.config.schema import FleetOptions, OllamaService, address
from citadel_proxy.fleet.breaker import Breaker, State
from citadel_proxy.fleet.metrics import BackendSeries
from citadel_proxy.management.names import canonical
from citadel_proxy.upstream.client import OllamaClient

DEFAULT_NAME = "default"
# Weight of the newest sample in the moving average of a backend's latency.
_LATENCY_ALPHA = 0.2


@dataclass(slots=True, eq=False)
class Backend:
    name: str
    client: OllamaClient
    breaker: Breaker
    series: BackendSeries
    # 0: no limit (the one-backend shorthand keeps today's behaviour).
    max_concurrent: int = 0
    weight: int = 1
    # Only these models go here (canonical names); None: whatever it has installed.
    allowed: frozenset[str] | None = None
    # From /api/tags and /api/ps; None until the first inventory answered.
    installed: frozenset[str] | None = None
    loaded: dict[str, int] = field(default_factory=dict)  # model -> size_vram
    in_flight: int = 0  # requests this worker has running here
    last_error: str = ""
    last_error_at: float | None = None
    latency_ms: float | None = None  # moving average of the time to Ollama's answer headers
    inventory_at: float | None = None

    def serves(self, model: str) -> bool | None:
        """True: installed here; False: not (or not allowed); None: not known yet."""
        if self.allowed is not None and model not in self.allowed:
            return False
        if self.installed is None:
            return None
        return model in self.installed

    def saw_latency(self, seconds: float) -> None:
        ms = seconds * 1000
        self.latency_ms = (
            ms if self.latency_ms is None else self.latency_ms + _LATENCY_ALPHA * (ms - self.latency_ms)
        )

    def saw_error(self, message: str) -> None:
        self.last_error, self.last_error_at = message, time.time()


def backend_services(
    service: OllamaService, backends: list[BackendConfig]
) -> list[tuple[BackendConfig, OllamaService]]:
    """Each configured backend's connection settings: its address, `service`'s timeouts and limits.

    max_retries=0: connect failures move on to the next backend rather than waiting on this one.
    """
    out = []
    for backend in backends:
        scheme, host, port = address(backend.url)
        settings = msgspec.structs.replace(service, scheme=scheme, host=host, port=port, max_retries=0)
        out.append((backend, settings))
    return out


def allowed_models(backend: BackendConfig) -> frozenset[str] | None:
    return frozenset(canonical(name) for name in backend.models) if backend.models else None


def new_breaker(options: FleetOptions, on_change: Callable[[State, State], None]) -> Breaker:
    return Breaker(
        failures=options.breaker_failures, cooldown_s=options.breaker_cooldown_s, on_change=on_change
    )
