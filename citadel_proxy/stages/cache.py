"""The `cache` stage: embeddings cached per input in embeddings pipelines, whole answers in the others.

List it after `auth` and `rate_limit` (a cached answer is still only for callers allowed to ask, and
still counts against their limits) and after `chunking`, so a cached answer served to a streaming
request is regrouped like a live one. `Cache-Control: no-cache` answers fresh and stores the answer;
`no-store` leaves the cache out. Every cacheable answer carries `X-Cache: HIT` or `MISS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from citadel_proxy.cache.control import Directives
from citadel_proxy.cache.embeddings import EmbeddingCache
from citadel_proxy.cache.responses import ResponseCache
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Reply

if TYPE_CHECKING:
    from citadel_proxy.services import Services

# The specification's cache_settings: 1 h for embeddings, 30 min for answers.
EMBEDDINGS_TTL_S = 3600.0
RESPONSES_TTL_S = 1800.0
# Under redis.key_prefix (default `citadel:`), giving the specification's `citadel:embeddings:`.
EMBEDDINGS_PREFIX = "embeddings:"
RESPONSES_PREFIX = "responses:"
# Stages a cache must come after, and why.
_BEFORE = {
    "auth": "a cached answer is only for callers allowed to ask",
    "rate_limit": "cached answers count against the limits too",
    "chunking": "a cached answer served as a stream is regrouped like a live one",
}


class CacheSettings(StageSettings, frozen=True):
    enabled: bool = True
    # Seconds an entry lives; none: 3600 in an embeddings pipeline, 1800 for answers.
    ttl: Annotated[float, Meta(gt=0)] | None = None
    # Key prefix under redis.key_prefix; none: `embeddings:` or `responses:`.
    prefix: Annotated[str, Meta(max_length=200)] | None = None
    # Answers only: cache every request, not just deterministic ones (temperature 0 or a seed).
    always: bool = False


def _check(_settings: CacheSettings, stages: Sequence[str]) -> str | None:
    position = stages.index("cache")
    late = [name for name in stages[position + 1 :] if name in _BEFORE]
    if late:
        return f"list cache after {late[0]}: {_BEFORE[late[0]]}"
    return None


class CacheStage:
    def __init__(self, settings: CacheSettings, services: Services) -> None:
        cache = services.cache
        self._enabled = settings.enabled
        self._embeddings = EmbeddingCache(
            cache.space(
                "embeddings", _or(settings.prefix, EMBEDDINGS_PREFIX), settings.ttl or EMBEDDINGS_TTL_S
            ),
            cache.flights,
        )
        self._responses = ResponseCache(
            cache.space("responses", _or(settings.prefix, RESPONSES_PREFIX), settings.ttl or RESPONSES_TTL_S),
            settings.always,
        )

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        if not self._enabled:
            return await call_next(ctx)
        control = Directives.of(ctx.headers)
        if ctx.request.kind == "embed":
            return await self._embeddings.run(ctx, call_next, control)
        return await self._responses.run(ctx, call_next, control)


def _or(value: str | None, default: str) -> str:
    return default if value is None else value


STAGE = StageType(name="cache", settings=CacheSettings, build=CacheStage, check=_check)
