"""The `chunking` stage: regroups Ollama's tokens into events of `chunk_size` for voice, IDE or GUI clients.

An event leaves when `chunk_size` tokens are buffered, when `max_delay_ms` has passed since the first
buffered token, or at the end, whichever comes first. The delay bounds how long a partial chunk is held;
it never makes the gateway wait when a chunk is complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from citadel_proxy.errors import GatewayError
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Delta, Reply, TokenStream

if TYPE_CHECKING:
    from citadel_proxy.services import Services


class ChunkingSettings(StageSettings, frozen=True):
    chunk_size: Annotated[int, Meta(ge=1, le=10_000)] = 1
    max_delay_ms: Annotated[float, Meta(ge=0)] | None = None
    # The specification's spelling of max_delay_ms, in seconds.
    delay_between_chunks: Annotated[float, Meta(ge=0)] | None = None
    # The most events handed to the writer at once: bounds memory per stream for a slow client.
    buffer_size: Annotated[int, Meta(ge=1, le=100_000)] = 50

    @property
    def max_delay_s(self) -> float:
        if self.max_delay_ms is not None:
            return self.max_delay_ms / 1000
        return self.delay_between_chunks if self.delay_between_chunks is not None else 0.0


def _check(settings: ChunkingSettings, _stages: Sequence[str]) -> str | None:
    if settings.max_delay_ms is not None and settings.delay_between_chunks is not None:
        return "set max_delay_ms or delay_between_chunks, not both"
    return None


def merge(group: list[Delta]) -> Delta:
    if len(group) == 1:
        return group[0]
    calls = [call for d in group if d.tool_calls for call in d.tool_calls]
    return Delta(
        "".join([d.content for d in group]),
        "".join([d.thinking for d in group]),
        calls or None,
    )


class ChunkedStream:
    """A TokenStream of grouped deltas over a TokenStream of single tokens."""

    __slots__ = (
        "_delay", "_ended", "_failure", "_first_at", "_inner", "_max_events", "_pending", "_ready", "_size",
    )  # fmt: skip

    def __init__(self, inner: TokenStream, settings: ChunkingSettings) -> None:
        self._inner = inner
        self._size = settings.chunk_size
        self._delay = settings.max_delay_s
        self._max_events = settings.buffer_size
        self._pending: list[Delta] = []
        self._ready: list[Delta] = []
        self._first_at = 0.0
        self._ended = False
        self._failure: GatewayError | None = None

    async def read(self) -> list[Delta] | None:
        while True:
            ready = self._ready
            if ready:
                if len(ready) <= self._max_events:
                    self._ready = []
                    return ready
                self._ready = ready[self._max_events :]
                return ready[: self._max_events]
            if self._failure is not None:
                raise self._failure
            if self._ended:
                return None
            if self._pending:
                try:
                    batch = await self._read_until_due()
                except GatewayError as exc:
                    # The tokens held for a chunk were delivered by Ollama: they go out before the error.
                    self._failure = exc
                    return [self._flush()]
                if batch is _DUE:
                    return [self._flush()]
            else:
                batch = await self._inner.read()
            if batch is None:
                self._ended = True
                if self._pending:
                    return [self._flush()]
                return None
            self._add(batch)

    async def _read_until_due(self) -> list[Delta] | None:
        loop = asyncio.get_running_loop()
        due = self._first_at + self._delay
        if due <= loop.time():
            return _DUE
        timer = asyncio.timeout_at(due)
        try:
            async with timer:
                return await self._inner.read()
        except TimeoutError:
            if timer.expired():
                return _DUE
            raise

    def _add(self, batch: list[Delta]) -> None:
        size = self._size
        if size == 1 and not self._pending:
            self._ready = batch
            return
        pending = self._pending
        for delta in batch:
            if not pending:
                self._first_at = asyncio.get_running_loop().time()
            pending.append(delta)
            if len(pending) >= size:
                self._ready.append(merge(pending))
                pending = self._pending = []
        if pending and self._delay <= 0:
            self._ready.append(self._flush())

    def _flush(self) -> Delta:
        group, self._pending = self._pending, []
        return merge(group)

    async def aclose(self) -> None:
        await self._inner.aclose()


_DUE: list[Delta] = []


class Chunking:
    def __init__(self, settings: ChunkingSettings, services: Services) -> None:
        self._settings = settings

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        reply = await call_next(ctx)
        if reply.stream is not None:
            reply.stream = ChunkedStream(reply.stream, self._settings)
        return reply


STAGE = StageType(name="chunking", settings=ChunkingSettings, build=Chunking, check=_check)
