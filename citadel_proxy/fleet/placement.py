"""Which backends may take a request for a model, best first."""

from __future__ import annotations

from citadel_proxy import errors
from citadel_proxy.fleet.backend import Backend


def candidates(
    backends: list[Backend], model: str, sticky: Backend | None, retry_after_s: int
) -> list[Backend]:
    """Healthy backends that have `model` (or whose inventory is not known yet), best first: the
    conversation's last backend while it has room, then where the model is loaded, then the least busy
    for its size, then the heavier weight.

    404 when no backend has the model, 503 when only backends whose breaker is open do.
    """
    if len(backends) == 1:
        only = backends[0]
        if only.serves(model) is False and only.allowed is not None:
            raise _nowhere(model)
        return [only]  # its own 404 (or answer) decides: as with one Ollama
    having = [b for b in backends if b.serves(model) is not False]
    if not having:
        raise _nowhere(model)
    healthy = [b for b in having if b.breaker.available()]
    if not healthy:
        raise errors.ServiceUnavailable(
            f"every backend that has {model} is failing; try again shortly",
            code="backends_unavailable",
            headers={"Retry-After": str(retry_after_s)},
        )
    healthy.sort(key=lambda b: _rank(b, model))
    if sticky is not None and sticky in healthy and not _full(sticky):
        healthy.remove(sticky)
        healthy.insert(0, sticky)
    return healthy


def _rank(backend: Backend, model: str) -> tuple[int, int, float, int]:
    load = backend.in_flight / backend.max_concurrent if backend.max_concurrent else 0.0
    return (
        0 if model in backend.loaded else 1,
        0 if backend.installed is not None else 1,  # known to have it before merely possible
        load,
        -backend.weight,
    )


def _full(backend: Backend) -> bool:
    return bool(backend.max_concurrent) and backend.in_flight >= backend.max_concurrent


def _nowhere(model: str) -> errors.ModelNotFound:
    return errors.ModelNotFound(f"no backend has the model {model}")
