"""Which backends may take a request for a model, best first.

What the inventory says (has the model, has it loaded) changes only when it is read again, so it is
worked out once per model and kept until then; what changes per request (breaker, in-flight) is read
in one pass that finds the best backend. The others are sorted only when a failover asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from citadel_proxy import errors
from citadel_proxy.fleet.backend import Backend
from citadel_proxy.management.names import canonical

# Model names remembered (they are the configured ones; the bound is against surprises).
_MAX_MODELS = 4096


# A backend that may have the model: its fixed rank (loaded, known to have it, weight), the backend,
# and 1 / max_concurrent (0: no limit), so that its load costs one multiplication per request.
Entry = tuple[float, Backend, float]


class Placement:
    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self._by_model: dict[str, list[Entry]] = {}
        self._capacity: dict[str, int] = {}

    def clear(self) -> None:
        """The inventory was read again."""
        self._by_model.clear()
        self._capacity.clear()

    def capacity(self, model: str) -> int:
        """The requests the backends that have `model` may run at once (0 where a backend sets no limit)."""
        found = self._capacity.get(model)
        if found is None:
            found = sum(backend.max_concurrent for _, backend, _ in self.having(model))
            if len(self._capacity) >= _MAX_MODELS:
                self._capacity.clear()
            self._capacity[model] = found
        return found

    def having(self, model: str) -> list[Entry]:
        """The backends that have `model` or may (inventory not read yet), each with its fixed rank:
        loaded first, then known to have it, then the heavier weight."""
        found = self._by_model.get(model)
        if found is None:
            key = canonical(model)
            found = []
            for backend in self.backends:
                serves = backend.serves(key)
                if serves is not False:
                    fixed = (0.0 if key in backend.loaded else 8.0) + (0.0 if serves else 4.0)
                    inverse = 1.0 / backend.max_concurrent if backend.max_concurrent else 0.0
                    # The load (0..1) stays below the fixed ranks' step of 4; weight only breaks ties.
                    found.append((fixed - backend.weight * 1e-9, backend, inverse))
            if len(self._by_model) >= _MAX_MODELS:
                self._by_model.clear()
            self._by_model[model] = found
        return found


def candidates(
    placement: Placement, model: str, sticky: Backend | None, retry_after_s: int
) -> Iterator[Backend]:
    """Healthy backends that have `model` (or whose inventory is not known yet), best first: the
    conversation's last backend while it has room, then where the model is loaded, then the least busy
    for its size, then the heavier weight.

    404 when no backend has the model, 503 when only backends whose breaker is open do.
    """
    having = placement.having(model)
    if not having:
        raise errors.ModelNotFound(f"no backend has the model {model}")
    best: Backend | None = None
    best_rank = float("inf")
    sticky_healthy = False
    for fixed, backend, inverse in having:
        breaker = backend.breaker
        if breaker.state != "closed" and not breaker.available():
            continue
        rank = fixed + backend.in_flight * inverse
        if rank < best_rank:
            best, best_rank = backend, rank
        if backend is sticky:
            sticky_healthy = True
    if best is None:
        raise errors.ServiceUnavailable(
            f"every backend that has {model} is failing; try again shortly",
            code="backends_unavailable",
            headers={"Retry-After": str(retry_after_s)},
        )
    first = sticky if sticky_healthy and sticky is not None and not _full(sticky) else best
    yield first
    # A failover: the others, ranked now (their load may have moved since the first pass).
    ranked = [
        (fixed + backend.in_flight * inverse, index, backend)
        for index, (fixed, backend, inverse) in enumerate(having)
        if backend is not first and backend.breaker.available()
    ]
    ranked.sort()
    for _, _, backend in ranked:
        yield backend


def _full(backend: Backend) -> bool:
    return bool(backend.max_concurrent) and backend.in_flight >= backend.max_concurrent
