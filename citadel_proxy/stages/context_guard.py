"""The `context_guard` stage: a prompt that will not fit the model's context is refused or given a larger
`num_ctx`, instead of being cut silently by Ollama; an answer whose prompt count shows a cut is flagged.

Before: the prompt's tokens are estimated (characters / `chars_per_token`; Ollama has no tokenizer
endpoint) against the effective `num_ctx` (the request's, else the model's configured default, else
`default_num_ctx`). `policy: refuse` answers 400 `context_length_exceeded`; `policy: raise` raises
`num_ctx` to fit, up to `max_num_ctx` and the model's own context length (from `/api/show`, remembered),
and refuses past them; `policy: fallback` sends the request to `fallback_model` (a longer-context model)
with num_ctx raised likewise. After: Ollama keeps the last `num_ctx` tokens of a longer prompt, so an answer
whose `prompt_eval_count` reaches `num_ctx` was cut: `X-Context-Truncated: true` on a whole answer, and
`citadel_context_truncated_total{model}` and `context_truncated: true` in the audit record's response
either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta

from citadel_proxy import errors
from citadel_proxy.management import ollama
from citadel_proxy.pipeline.options import options_from_map, options_to_map
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Delta, Reply, TokenStream

if TYPE_CHECKING:
    from prometheus_client import Counter

    from citadel_proxy.config.models import ModelRouter
    from citadel_proxy.pipeline.request import InferenceRequest
    from citadel_proxy.services import Services
    from citadel_proxy.upstream.client import OllamaClient

# num_ctx is raised in steps, so that nearby prompts share a loaded runner (Ollama reloads a model
# whose num_ctx changes).
_STEP_TOKENS = 2048


class ContextGuardSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # refuse: 400; raise: a larger num_ctx; fallback: `fallback_model` (longer context), num_ctx raised.
    policy: Literal["refuse", "raise", "fallback"] = "refuse"
    # Ollama's context size when neither the request nor the model's config sets one.
    default_num_ctx: Annotated[int, Meta(ge=1)] = 4096
    # policy raise: the largest num_ctx the gateway will ask for (memory grows with it).
    max_num_ctx: Annotated[int, Meta(ge=1)] = 32768
    chars_per_token: Annotated[float, Meta(gt=0)] = 4.0
    # How long a model's context length from /api/show is remembered.
    model_info_ttl_s: Annotated[float, Meta(ge=0)] = 3600.0
    # policy fallback: a configured model (or alias) with a longer context.
    fallback_model: str | None = None

    def __post_init__(self) -> None:
        if self.policy == "fallback" and not self.fallback_model:
            raise ValueError("policy fallback needs fallback_model (a configured model or alias)")


@dataclass(slots=True)
class ContextGuard:
    settings: ContextGuardSettings
    upstream: OllamaClient
    truncated: Counter
    models: ModelRouter
    # model -> (its context length or None when unknown, when that was learned)
    _lengths: dict[str, tuple[int | None, float]] = field(default_factory=dict)

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        request = ctx.request
        if request.kind == "embed":
            return await call_next(ctx)
        num_ctx = _num_ctx(request) or self.settings.default_num_ctx
        needed = math.ceil(_prompt_chars(request) / self.settings.chars_per_token)
        if needed > num_ctx:
            num_ctx = await self._fit(ctx, needed, num_ctx)
        reply = await call_next(ctx)
        if reply.completion is not None:
            if reply.completion.prompt_tokens >= num_ctx:
                self.flag(ctx)
            return reply
        if reply.stream is not None:
            reply.stream = _Watched(reply.stream, ctx, num_ctx, self)
        return reply

    async def _fit(self, ctx: Context, needed: int, num_ctx: int) -> int:
        request, policy = ctx.request, self.settings.policy
        model = request.model
        if policy == "fallback" and self.settings.fallback_model:
            model = self.models.resolve(self.settings.fallback_model)
        model_max = await self._context_length(model)
        ceiling = min(self.settings.max_num_ctx, model_max or self.settings.max_num_ctx)
        if policy != "refuse" and needed <= ceiling:
            raised = min(ceiling, math.ceil(needed / _STEP_TOKENS) * _STEP_TOKENS)
            given = options_to_map(request.options) | {"num_ctx": raised}
            ctx.request = msgspec.structs.replace(request, model=model, options=options_from_map(given))
            ctx.response_headers["X-Context-Num-Ctx"] = str(raised)
            if model != request.model:
                ctx.model = model
                ctx.response_headers["X-Context-Model"] = model
            return raised
        limit = ceiling if policy != "refuse" else num_ctx
        raise errors.InvalidRequest(
            f"the prompt is about {needed} tokens (estimated), more than the {limit} tokens of context "
            f"available for {model}; shorten it or ask for a larger num_ctx",
            param="messages" if request.kind == "chat" else "prompt",
            code="context_length_exceeded",
        )

    async def _context_length(self, model: str) -> int | None:
        known = self._lengths.get(model)
        now = time.monotonic()
        if known is not None and now - known[1] < self.settings.model_info_ttl_s:
            return known[0]
        try:
            _, length, _ = ollama.model_facts(await ollama.show(self.upstream, model))
        except errors.GatewayError:
            length = None  # unknown: max_num_ctx alone bounds the raise
        self._lengths[model] = (length, now)
        return length

    def flag(self, ctx: Context) -> None:
        ctx.outcome.context_truncated = True
        ctx.response_headers["X-Context-Truncated"] = "true"
        self.truncated.labels(model=ctx.model).inc()


class _Watched:
    """The stream unchanged; at its end, Ollama's prompt count against num_ctx."""

    __slots__ = ("_ctx", "_guard", "_inner", "_num_ctx")

    def __init__(self, inner: TokenStream, ctx: Context, num_ctx: int, guard: ContextGuard) -> None:
        self._inner, self._ctx, self._num_ctx, self._guard = inner, ctx, num_ctx, guard

    async def read(self) -> list[Delta] | None:
        batch = await self._inner.read()
        if batch is None and self._ctx.outcome.prompt_tokens >= self._num_ctx:
            self._guard.flag(self._ctx)
        return batch

    async def aclose(self) -> None:
        await self._inner.aclose()


def _num_ctx(request: InferenceRequest) -> int | None:
    extra = request.options.extra if request.options is not None else None
    value = (extra or {}).get("num_ctx")
    return value if isinstance(value, int) and value > 0 else None


def _prompt_chars(request: InferenceRequest) -> int:
    chars = len(request.prompt) + len(request.system or "") + len(request.suffix or "")
    chars += sum(len(m.content) + len(m.thinking) for m in request.messages or ())
    return chars + len(request.tools or b"")


def build(settings: ContextGuardSettings, services: Services) -> ContextGuard:
    return ContextGuard(settings, services.upstream, services.metrics.context_truncated, services.models)


STAGE = StageType(name="context_guard", settings=ContextGuardSettings, build=build)
