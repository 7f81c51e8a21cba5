"""Per-input embeddings cache: hits are filled in, only the missing inputs go upstream, in one call.

Concurrent misses for one key share one upstream call (single flight). A caller first joins the key's
flight: the leader looks the key up and, on a miss, fetches it; followers wait for the entry the leader
settles the flight with. The leader stores before settling, so a request arriving after the flight has
ended finds the entry in the cache. A follower whose leader failed fetches for itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from citadel_proxy import errors
from citadel_proxy.cache.codec import Vector, decode_vector, encode_vector
from citadel_proxy.cache.control import X_CACHE, Directives
from citadel_proxy.cache.flight import Flight, SingleFlight
from citadel_proxy.cache.keys import Key, embedding_key
from citadel_proxy.cache.service import CacheSpace
from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Completion, Context, Reply


@dataclass(slots=True)
class _Batch:
    """A request's inputs grouped by key: an input given twice is looked up and embedded once."""

    request: InferenceRequest
    keys: dict[str, Key]
    inputs: dict[str, list[int]]
    vectors: list[Vector | None]

    @classmethod
    def of(cls, request: InferenceRequest, prefix: str) -> _Batch:
        texts = request.inputs()
        batch = cls(request, {}, {}, [None] * len(texts))
        for index, text in enumerate(texts):
            key = embedding_key(
                prefix,
                normalize=request.normalize,
                model=request.model,
                text=text,
                truncate=request.truncate,
                dimensions=request.dimensions,
                options=request.options,
            )
            batch.keys[key.name] = key
            batch.inputs.setdefault(key.name, []).append(index)
        return batch

    def fill(self, name: str, vector: Vector) -> None:
        for index in self.inputs[name]:
            self.vectors[index] = vector

    def results(self) -> list[Vector]:
        """Every vector, in input order, once the pipeline has run."""
        done = [v for v in self.vectors if v is not None]
        if len(done) != len(self.vectors):
            raise errors.GatewayError("an embeddings pipeline ended without a vector for every input")
        return done

    def count(self, names: list[str]) -> int:
        return sum(len(self.inputs[name]) for name in names)


class EmbeddingCache:
    def __init__(self, space: CacheSpace, flights: SingleFlight) -> None:
        self.space = space
        self._flights = flights

    async def run(self, ctx: Context, call_next: Handler, control: Directives) -> Reply:
        ctx.response_headers[X_CACHE] = "MISS"
        texts = ctx.request.inputs()
        if not texts or not control.store:
            self.space.misses.inc(len(texts))
            return await call_next(ctx)
        batch = _Batch.of(ctx.request, self.space.prefix)
        if not control.read:
            self.space.misses.inc(len(texts))
            await self._fetch(ctx, batch, list(batch.inputs), call_next)
            return _reply(ctx, batch)
        flights = {name: self._flights.join(name) for name in batch.inputs}
        led = [flight for flight in flights.values() if flight.leader]
        try:
            pending, trace = self._lookup(batch, led), ctx.trace
            hits = await (pending if trace is None else trace.waited("cache lookup", pending))
            self.space.hits.inc(batch.count(hits))
            self.space.misses.inc(len(texts) - batch.count(hits))
            missing = [f.key for f in led if f.key not in hits]
            if missing:
                entries = await self._fetch(ctx, batch, missing, call_next)
                for name in missing:
                    self._flights.settle(flights[name], entries[name])
        finally:
            for flight in led:
                self._flights.settle(flight, None)
        await self._follow(ctx, batch, [f for f in flights.values() if not f.leader], call_next)
        if len(hits) == len(flights):
            ctx.outcome.cache_hit = True
            ctx.response_headers[X_CACHE] = "HIT"
        return _reply(ctx, batch)

    async def _lookup(self, batch: _Batch, led: list[Flight]) -> list[str]:
        """Fill in the entries the cache has for the keys this caller leads; their flights end here."""
        if not led:
            return []
        found = await self.space.get_many([batch.keys[flight.key] for flight in led])
        hits = []
        for flight, raw in zip(led, found, strict=True):
            vector = self._decode(batch.keys[flight.key], raw)
            if vector is not None:
                batch.fill(flight.key, vector)
                self._flights.settle(flight, raw)
                hits.append(flight.key)
        return hits

    async def _follow(self, ctx: Context, batch: _Batch, follows: list[Flight], call_next: Handler) -> None:
        failed = []
        for flight in follows:
            raw = await flight.wait()
            vector = self._decode(batch.keys[flight.key], raw)
            if vector is None:
                failed.append(flight.key)
            else:
                batch.fill(flight.key, vector)
        if failed:
            await self._fetch(ctx, batch, failed, call_next)

    async def _fetch(
        self, ctx: Context, batch: _Batch, names: list[str], call_next: Handler
    ) -> dict[str, bytes]:
        """Embed one input per key upstream, store the vectors, and return their entries by key."""
        request = batch.request
        texts = request.inputs()
        # The stages after this one, and the backend, see only the inputs the cache could not answer.
        ctx.request = msgspec.structs.replace(request, input=[texts[batch.inputs[name][0]] for name in names])
        try:
            vectors = (await call_next(ctx)).embeddings
        finally:
            ctx.request = request
        if vectors is None or len(vectors) != len(names):
            raise errors.GatewayError("the embeddings terminal left an input without a vector")
        entries: dict[str, bytes] = {}
        for name, vector in zip(names, vectors, strict=True):
            batch.fill(name, vector)
            entries[name] = encode_vector(batch.keys[name].tag, vector)
        await self.space.put_many([(batch.keys[name], entry) for name, entry in entries.items()])
        return entries

    def _decode(self, key: Key, raw: bytes | None) -> Vector | None:
        if raw is None:
            return None
        vector = decode_vector(key.tag, raw)
        if vector is None:
            # Corrupted, truncated, or written under another key: never served, replaced on the next store.
            self.space.errors.inc()
        return vector


def _reply(ctx: Context, batch: _Batch) -> Reply:
    # Tokens only for what Ollama embedded for this request: cached vectors cost it nothing.
    return Reply(
        completion=Completion(content="", finish_reason=None, prompt_tokens=ctx.outcome.prompt_tokens),
        embeddings=batch.results(),
    )
