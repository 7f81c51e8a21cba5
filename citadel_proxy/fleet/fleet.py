"""The backends of one worker, opened and closed by the app's lifespan, and their inventory loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from citadel_proxy import errors
from citadel_proxy.config.schema import Backend as BackendConfig
from citadel_proxy.config.schema import Config, FleetOptions, OllamaService
from citadel_proxy.fleet.admission import Admission
from citadel_proxy.fleet.backend import (
    DEFAULT_NAME,
    Backend,
    allowed_models,
    backend_services,
    new_breaker,
)
from citadel_proxy.fleet.breaker import State
from citadel_proxy.fleet.inventory import refresh
from citadel_proxy.fleet.key_limits import KeyLimits
from citadel_proxy.fleet.metrics import BackendSeries, FleetMetrics
from citadel_proxy.fleet.placement import Placement
from citadel_proxy.fleet.slots import RedisSlots, Slots, WorkerSlots
from citadel_proxy.fleet.supersede import Sessions
from citadel_proxy.management.names import canonical
from citadel_proxy.management.pulls import PullManager, open_pull_manager
from citadel_proxy.observability.metrics import Metrics
from citadel_proxy.upstream.client import OllamaClient, ReachabilityObserver

_log = logging.getLogger("citadel.fleet")
# Conversations remembered per worker for stickiness (the oldest is forgotten first).
_MAX_STICKY = 50_000
# The launcher tells its workers how many they are, so each takes its share of every backend.
WORKERS_ENV = "CITADEL_WORKERS"
_INVENTORY_TIMEOUT_S = 5.0


class Fleet:
    def __init__(
        self, options: FleetOptions, backends: list[Backend], slots: Slots, metrics: FleetMetrics
    ) -> None:
        self.options = options
        self.backends = backends
        self.by_name = {b.name: b for b in backends}
        self.placement = Placement(backends)
        self.slots = slots
        self.metrics = metrics
        self.several = len(backends) > 1
        # One Ollama without a concurrency cap: no placement, slot or queue to go through.
        self.lone: Backend | None = None if self.several or backends[0].max_concurrent else backends[0]
        self.admission = Admission(options.aging_s, options.retry_after_s)
        self.sessions = Sessions()
        self.key_limits = KeyLimits(options.max_in_flight_per_key, options.retry_after_s)
        self._sticky: OrderedDict[str, Backend] = OrderedDict()
        # Pulls on the backends after the first (whose manager is Services.pulls).
        self.pulls: dict[str, PullManager] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def default(self) -> Backend:
        return self.backends[0]

    def sticky(self, conversation: str | None) -> Backend | None:
        if conversation is None or not self.several:
            return None
        return self._sticky.get(conversation)

    def answered(self, conversation: str | None, backend: Backend) -> None:
        if conversation is None or not self.several:
            return
        self._sticky[conversation] = backend
        self._sticky.move_to_end(conversation)
        if len(self._sticky) > _MAX_STICKY:
            self._sticky.popitem(last=False)

    def chosen(self, names: str | None) -> list[Backend]:
        """The backends a management call names (None: all); an unknown name is a 404 at the route."""
        if names is None:
            return list(self.backends)
        return [self.by_name[names]] if names in self.by_name else []

    async def refresh(self, backends: list[Backend] | None = None) -> None:
        await asyncio.gather(*(refresh(b, _INVENTORY_TIMEOUT_S) for b in backends or self.backends))
        self.placement.clear()

    async def keep_warm(self, models: list[str]) -> None:
        """Load `models` (keep_alive -1) on every backend that has them; failures are logged only."""
        for backend in self.backends:
            for model in models:
                if backend.serves(canonical(model)):
                    body = f'{{"model": "{model}", "keep_alive": -1}}'.encode()
                    try:
                        await backend.client.fetch("POST", "/api/generate", body, total_s=600)
                    except errors.GatewayError as exc:
                        _log.warning("keep_warm %s on %s failed: %s", model, backend.name, exc)

    async def _inventory_forever(self, keep: list[str]) -> None:
        # A load can take minutes: warming runs beside the inventory reads, one round at a time.
        warming: asyncio.Task[None] | None = None
        try:
            while True:
                await self.refresh()
                cold = [m for m in keep if not self._loaded_everywhere(canonical(m))]
                if cold and (warming is None or warming.done()):
                    warming = asyncio.get_running_loop().create_task(self.keep_warm(cold))
                await asyncio.sleep(self.options.inventory_interval_s)
        finally:
            if warming is not None:
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming

    def _loaded_everywhere(self, model: str) -> bool:
        return all(model in b.loaded for b in self.backends if b.serves(model))

    def start(self, keep_warm: list[str]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._inventory_forever(keep_warm), name="fleet")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _on_change(metrics: FleetMetrics, name: str) -> Callable[[State, State], None]:
    def changed(old: State, new: State) -> None:
        metrics.breaker_transitions.labels(name, new).inc()
        _log.warning("backend %s: breaker %s -> %s", name, old, new)

    return changed


async def open_fleet(
    config: Config,
    stack: contextlib.AsyncExitStack,
    metrics: Metrics,
    redis: Redis | None,
    on_reachable: ReachabilityObserver,
) -> Fleet:
    """The backends' clients opened; with `ollama.backends`, the inventory loop and shared slots too."""
    fleet_metrics = FleetMetrics(metrics.registry, metrics.tally)
    options = config.ollama.fleet
    backends: list[Backend] = []
    settings: list[tuple[BackendConfig | None, OllamaService]]
    if not config.ollama.backends:
        settings = [(None, config.ollama.service)]
    else:
        settings = list(backend_services(config.ollama.service, config.ollama.backends))
    for index, (entry, service) in enumerate(settings):
        name = entry.name if entry is not None else DEFAULT_NAME
        client = OllamaClient(service, on_reachable=on_reachable if index == 0 else _ignore)
        await client.open()
        stack.push_async_callback(client.close)
        backend = Backend(
            name=name,
            client=client,
            breaker=new_breaker(options, _on_change(fleet_metrics, name)),
            series=BackendSeries.of(fleet_metrics, name),
        )
        if entry is not None:
            backend.max_concurrent, backend.weight = entry.max_concurrent, entry.weight
            backend.allowed = allowed_models(entry)
        backends.append(backend)
    local = WorkerSlots(int(os.environ.get(WORKERS_ENV) or 1))
    slots: Slots = local
    if config.ollama.backends and redis is not None and config.redis is not None:
        shared = RedisSlots(redis, config.redis.key_prefix, options.lease_ttl_s, local)
        shared.start()
        stack.push_async_callback(shared.close)
        slots = shared
    fleet = Fleet(options, backends, slots, fleet_metrics)
    for backend in backends[1:]:
        fleet.pulls[backend.name] = await open_pull_manager(backend.client, stack)
    if config.ollama.backends:
        fleet.start(config.ollama.keep_warm)
        stack.push_async_callback(fleet.close)
    return fleet


def one_backend(client: OllamaClient, registry: CollectorRegistry | None = None) -> Fleet:
    """A fleet of one already opened client (the one-Ollama shorthand, without the lifespan)."""
    options = FleetOptions()
    metrics = FleetMetrics(registry if registry is not None else CollectorRegistry())
    backend = Backend(
        name=DEFAULT_NAME,
        client=client,
        breaker=new_breaker(options, _on_change(metrics, DEFAULT_NAME)),
        series=BackendSeries.of(metrics, DEFAULT_NAME),
    )
    return Fleet(options, [backend], WorkerSlots(1), metrics)


def first_backend_url(config: Config) -> str:
    backends = backend_services(config.ollama.service, config.ollama.backends[:1])
    return backends[0][1].base_url if backends else config.ollama.service.base_url


def _ignore(_up: bool, _why: str) -> None:
    pass
