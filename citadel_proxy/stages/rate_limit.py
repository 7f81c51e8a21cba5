"""The `rate_limit` stage: requests and tokens per minute, per key (or per client IP without one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta

from citadel_proxy.errors import RateLimited
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.taps import TappedStream, tapped
from citadel_proxy.pipeline.types import Context, Delta, Principal, Reply
from citadel_proxy.ratelimit import Decision, Limits, lowest, rate_limit_headers

if TYPE_CHECKING:
    from citadel_proxy.ratelimit import RateLimiter
    from citadel_proxy.services import Services


class RateLimitSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Per identity; a key's own limits apply too, and the lower of the two wins.
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Meta(ge=1)] | None = None


# Keys whose limits are remembered per stage (keys in use; cleared when full).
_MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """What the stage works out once per key: its limits (the pipeline's, lowered by the key's own) and
    the identity its buckets are counted under."""

    principal: Principal
    limits: Limits
    identity: str


@dataclass(frozen=True, slots=True)
class RateLimitStage:
    settings: RateLimitSettings
    limiter: RateLimiter
    # By key name: a Principal's own hash is a tuple of all its fields, made again on every request.
    _callers: dict[str, Caller] = field(default_factory=dict, compare=False, repr=False)
    # The same Limits each time: a lease is matched to its limits by identity first (shared.Lease).
    _anonymous: Limits = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        anonymous = Limits(self.settings.requests_per_minute, self.settings.tokens_per_minute)
        object.__setattr__(self, "_anonymous", anonymous)  # (frozen)

    def caller(self, principal: Principal) -> Caller:
        """The key's limits and identity, worked out once per key (again for a key whose record changed,
        e.g. its limits: another Principal under the same name)."""
        caller = self._callers.get(principal.name)
        if caller is None or (caller.principal is not principal and caller.principal != principal):
            if len(self._callers) >= _MAX_REMEMBERED:
                self._callers.clear()
            limits = Limits(
                lowest(self.settings.requests_per_minute, principal.requests_per_minute),
                lowest(self.settings.tokens_per_minute, principal.tokens_per_minute),
            )
            caller = self._callers[principal.name] = Caller(principal, limits, f"key:{principal.name}")
        return caller

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        principal = ctx.principal
        if principal is None:
            limits, identity = self._anonymous, f"ip:{ctx.client}"
        else:
            caller = self.caller(principal)
            limits, identity = caller.limits, caller.identity
        if limits.empty:
            return await call_next(ctx)
        # Most requests are decided at once (a lease of slots in hand): no coroutine, no wait to trace.
        decision = self.limiter.acquire_now(identity, limits)
        if decision is None:
            pending, trace = self.limiter.acquire(identity, limits), ctx.trace
            decision = await (pending if trace is None else trace.waited("rate limit", pending))
        if not decision.allowed:
            raise RateLimited(_refusal(decision), headers=rate_limit_headers(decision))
        rate_limit_headers(decision, ctx.response_headers)
        reply = await call_next(ctx)
        if not limits.tokens_per_minute:
            return reply
        if reply.stream is None:
            # Not awaited: the answer is not held back by a Redis round trip.
            self.limiter.charge_soon(identity, limits, sum(ctx.outcome.tokens(reply.completion)))
            return reply
        stream = tapped(reply)
        stream.add(Charge(self.limiter, ctx, identity, limits, stream), batches=False)
        return reply


class Charge:
    """A stream's tap: charges its tokens once it ends, or is closed early (a client that leaves still
    pays). Holds what the charge needs, not a closure over it: an open stream keeps this while it lasts.
    """

    __slots__ = ("_ctx", "_identity", "_limiter", "_limits", "_settled", "_stream")

    def __init__(
        self, limiter: RateLimiter, ctx: Context, identity: str, limits: Limits, stream: TappedStream
    ) -> None:
        self._limiter = limiter
        self._ctx = ctx
        self._identity = identity
        self._limits = limits
        self._stream = stream
        self._settled = False

    def seen(self, batch: list[Delta]) -> None:
        """Not called: added with batches=False (the stream counts the deltas)."""

    def ended(self, error: Exception | None) -> None:
        if error is None:
            self._settle()

    def closed(self) -> None:
        self._settle()

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            ctx = self._ctx
            used = sum(ctx.outcome.tokens(None))
            # Ollama reports counts at the end; a stream cut short is charged a token per delta seen.
            self._limiter.charge_soon(self._identity, self._limits, used or self._stream.deltas)


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
