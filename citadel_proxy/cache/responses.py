"""Whole-answer cache for chat and completions: deterministic requests (or `always`) answered again.

Answers to non-streaming requests are stored; a stored answer serves both kinds of request. A streaming
request gets it as a token stream, so the stages outside this one (chunking) frame it as they would a
live answer.
"""

from __future__ import annotations

from citadel_proxy.cache.codec import decode_completion, encode_completion
from citadel_proxy.cache.control import X_CACHE, Directives
from citadel_proxy.cache.keys import Key, response_key
from citadel_proxy.cache.service import CacheSpace
from citadel_proxy.pipeline.replay import CompletionStream
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Completion, Context, Reply


def deterministic(ctx: Context) -> bool:
    """Temperature 0 or a seed: the client asked for the same answer to the same request."""
    options = ctx.request.options
    if options is None:
        return False
    return options.temperature == 0 or options.seed is not None


class ResponseCache:
    def __init__(self, space: CacheSpace, always: bool) -> None:
        self.space = space
        self._always = always

    async def run(self, ctx: Context, call_next: Handler, control: Directives) -> Reply:
        if not (self._always or deterministic(ctx)):
            return await call_next(ctx)
        ctx.response_headers[X_CACHE] = "MISS"
        key = response_key(self.space.prefix, ctx)
        if control.read:
            pending, trace = self._lookup(key), ctx.trace
            completion = await (pending if trace is None else trace.waited("cache lookup", pending))
            if completion is not None:
                self.space.hits.inc()
                return _hit(ctx, completion)
        self.space.misses.inc()
        reply = await call_next(ctx)
        if control.store and reply.completion is not None:
            await self.space.put_many([(key, encode_completion(key.tag, reply.completion))])
        return reply

    async def _lookup(self, key: Key) -> Completion | None:
        raw = (await self.space.get_many([key]))[0]
        if raw is None:
            return None
        completion = decode_completion(key.tag, raw)
        if completion is None:
            # Corrupted, truncated, or written under another key: never served, replaced on the next store.
            self.space.errors.inc()
        return completion


def _hit(ctx: Context, completion: Completion) -> Reply:
    ctx.response_headers[X_CACHE] = "HIT"
    ctx.outcome.cache_hit = True
    ctx.outcome.answered(completion)
    if ctx.stream:
        return Reply(stream=CompletionStream(completion))
    return Reply(completion=completion)
