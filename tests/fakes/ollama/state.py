"""The fake's shared state and model bookkeeping (install, lookup, behaviour choice, keep-alive)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import UTC, datetime, timedelta

from .behavior import Behavior, PullRecord, StreamRecord
from .models import FakeModel
from .wire import _FOREVER, ApiError, normalize_name

DEFAULT_KEEP_ALIVE_S = 300.0


class ServerState:
    """The state FakeOllama.__init__ sets up, typed for the route mixins, and the bookkeeping they share."""

    behavior: Behavior
    version: str
    pull_step_delay_s: float
    embed_delay_s: float
    models: dict[str, FakeModel]
    registry: set[str]
    streams: list[StreamRecord]
    pulls: list[PullRecord]
    embed_inputs: list[str]
    loaded: dict[str, datetime]
    running: int
    most_running: int
    _keep_alive: dict[str, float]
    _queue: deque[Behavior]
    _stream_added: asyncio.Event
    _per_model: dict[str, Behavior]
    _tasks: set[asyncio.Task[None]]

    def install(self, model: str | FakeModel, *, age_h: float = 0.0) -> FakeModel:
        if isinstance(model, str):
            caps = ("embedding",) if "embed" in model.lower() else ("completion",)
            model = FakeModel(normalize_name(model), caps)
        if model.modified_at is None:
            model = dataclasses.replace(model, modified_at=datetime.now(UTC) - timedelta(hours=age_h))
        model = dataclasses.replace(model, name=normalize_name(model.name))
        self.models[model.name] = model
        return model

    def _lookup(self, name: str) -> FakeModel:
        model = self.models.get(normalize_name(name)) if name else None
        if model is None:
            raise ApiError(404, f"model '{name}' not found")
        return model

    def _pick(self, model: FakeModel) -> Behavior:
        if self._queue:
            return self._queue.popleft()
        return self._per_model.get(model.name, self.behavior)

    def load(self, name: str) -> None:
        """Mark an installed model as loaded (kept loaded), as if a generation had loaded it."""
        self._touch(self._lookup(name), -1)

    def _touch(self, model: FakeModel, keep_alive: float | None) -> None:
        """Keep-alive bookkeeping of 10.3: no value keeps the loaded model's own; 0 unloads."""
        seconds = self._keep_alive.get(model.name, DEFAULT_KEEP_ALIVE_S) if keep_alive is None else keep_alive
        if seconds == 0:
            self.loaded.pop(model.name, None)
            return
        self._keep_alive[model.name] = seconds
        self.loaded[model.name] = _FOREVER if seconds < 0 else datetime.now(UTC) + timedelta(seconds=seconds)
