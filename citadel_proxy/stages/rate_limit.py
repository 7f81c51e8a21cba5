"""The `rate_limit` stage: requests and tokens per minute, per key (or per client IP without one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from citadel_proxy.errors import RateLimited
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Delta, Principal, Reply, TokenStream
from citadel_proxy.ratelimit import Decision, Limits, lowest, rate_limit_headers

if TYPE_CHECKING:
    from citadel_proxy.ratelimit import RateLimiter
    from citadel_proxy.services import Services


class RateLimitSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Per identity; a key's own limits apply too, and the lower of the two wins.
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Meta(ge=1)] | None = None


# Principals whose limits are remembered per stage (keys in use; cleared when full).
_MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class RateLimitStage:
    settings: RateLimitSettings
    limiter: RateLimiter
    _limits: dict[Principal | None, Limits] = field(default_factory=dict, compare=False, repr=False)

    def limits_for(self, principal: Principal | None) -> Limits:
        """The pipeline's limits, lowered by the key's own: worked out once per key."""
        limits = self._limits.get(principal)
        if limits is None:
            if len(self._limits) >= _MAX_REMEMBERED:
                self._limits.clear()
            limits = Limits(self.settings.requests_per_minute, self.settings.tokens_per_minute)
            if principal is not None:
                limits = Limits(
                    lowest(limits.requests_per_minute, principal.requests_per_minute),
                    lowest(limits.tokens_per_minute, principal.tokens_per_minute),
                )
            self._limits[principal] = limits
        return limits

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        principal = ctx.principal
        limits = self.limits_for(principal)
        if limits.empty:
            return await call_next(ctx)
        identity = f"key:{principal.name}" if principal else f"ip:{ctx.client}"
        # Most requests are decided at once (a lease of slots in hand): no coroutine, no wait to trace.
        decision = self.limiter.acquire_now(identity, limits)
        if decision is None:
            pending, trace = self.limiter.acquire(identity, limits), ctx.trace
            decision = await (pending if trace is None else trace.waited("rate limit", pending))
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise RateLimited(_refusal(decision), headers=headers)
        ctx.response_headers.update(headers)
        reply = await call_next(ctx)
        if not limits.tokens_per_minute:
            return reply
        if reply.stream is None:
            # Not awaited: the answer is not held back by a Redis round trip.
            self.limiter.charge_soon(identity, limits, sum(ctx.outcome.tokens(reply.completion)))
            return reply

        def charge(estimate: int) -> None:
            used = sum(ctx.outcome.tokens(None))
            self.limiter.charge_soon(identity, limits, used or estimate)

        return Reply(stream=ChargedStream(reply.stream, charge))


@dataclass(slots=True)
class ChargedStream:
    """Charges the tokens once the stream ends, or is closed early (a client that leaves still pays).

    `read` only does synchronous work after the inner read returned, so cancelling it loses nothing.
    """

    inner: TokenStream
    charge: Callable[[int], None]
    deltas: int = 0
    settled: bool = False

    async def read(self) -> list[Delta] | None:
        batch = await self.inner.read()
        if batch is None:
            self._settle()
        else:
            self.deltas += len(batch)
        return batch

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self._settle()

    def _settle(self) -> None:
        if not self.settled:
            self.settled = True
            # Ollama reports counts at the end; a stream cut short is charged a token per delta seen.
            self.charge(self.deltas)


def _refusal(decision: Decision) -> str:
    requests, tokens = decision.requests, decision.tokens
    if requests is not None and requests.remaining == 0:
        what = f"{requests.limit} requests per minute"
    elif tokens is not None:
        what = f"{tokens.limit} tokens per minute"
    else:
        what = "the rate limit"
    return f"Rate limit reached: {what}. Retry after {decision.retry_after_s:.1f} s."


def check(settings: RateLimitSettings, names: Sequence[str]) -> str | None:
    if "auth" in names and names.index("auth") > names.index("rate_limit"):
        return "rate_limit must come after auth, so that it counts per key"
    return None


def build(settings: RateLimitSettings, services: Services) -> RateLimitStage:
    return RateLimitStage(settings, services.rate_limiter)


STAGE = StageType(name="rate_limit", settings=RateLimitSettings, build=build, check=check)
