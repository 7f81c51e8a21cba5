"""The order of candidates: loaded, then known, then least busy for its size, then weight; the sticky
backend first while it has room; and bench/routing.py's figures are computed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from bench import routing
from citadel_proxy import errors
from citadel_proxy.config.schema import FleetOptions, OllamaService
from citadel_proxy.fleet.backend import Backend, new_breaker
from citadel_proxy.fleet.dispatch import dispatch
from citadel_proxy.fleet.metrics import BackendSeries, FleetMetrics
from citadel_proxy.fleet.placement import Placement, candidates
from citadel_proxy.pipeline.types import Reply
from citadel_proxy.upstream.client import OllamaClient

MODEL = "phi3:latest"


def _backend(name: str, *, loaded: bool = False, in_flight: int = 0, weight: int = 1) -> Backend:
    backend = Backend(
        name=name,
        client=OllamaClient(OllamaService()),
        breaker=new_breaker(FleetOptions(), lambda _old, _new: None),
        series=BackendSeries.of(FleetMetrics(CollectorRegistry()), name),
        max_concurrent=4,
        weight=weight,
        in_flight=in_flight,
    )
    backend.installed = frozenset({MODEL})
    backend.loaded = {MODEL: 1} if loaded else {}
    return backend


def _order(backends: list[Backend], sticky: Backend | None = None) -> list[str]:
    return [b.name for b in candidates(Placement(backends), MODEL, sticky, 2)]


def test_loaded_then_least_busy_then_weight() -> None:
    backends = [
        _backend("busy", in_flight=3),
        _backend("idle-light"),
        _backend("idle-heavy", weight=5),
        _backend("loaded-busy", loaded=True, in_flight=3),
    ]
    assert _order(backends) == ["loaded-busy", "idle-heavy", "idle-light", "busy"]


def test_sticky_first_unless_full() -> None:
    loaded, sticky = _backend("loaded", loaded=True), _backend("sticky", in_flight=2)
    assert _order([loaded, sticky], sticky) == ["sticky", "loaded"]
    sticky.in_flight = 4
    assert _order([loaded, sticky], sticky) == ["loaded", "sticky"]


def test_open_breakers_are_left_out() -> None:
    down, up = _backend("down", loaded=True), _backend("up")
    for _ in range(FleetOptions().breaker_failures):
        down.breaker.failed()
    assert _order([down, up]) == ["up"]


async def test_routing_bench_measures() -> None:
    assert routing.placement_us(30, 100) > 0
    assert await routing.dispatch_us(3, 100) > 0
    assert 0 < await routing.failover_us(10) < 1e6


async def test_full_backend_makes_a_503_not_the_others_404() -> None:
    fleet = routing._fleet(2)
    lacking, full = fleet.backends
    full.in_flight = full.max_concurrent  # its slots are taken
    full.loaded = {}
    fleet.placement.clear()

    async def send(client: object) -> Reply:
        raise errors.ModelNotFound("model 'phi3' not found")

    with pytest.raises(errors.ServiceUnavailable) as refused:
        await dispatch(fleet, routing._context(0, None), send)
    assert refused.value.code == "backends_busy"
    assert lacking.in_flight == 0
