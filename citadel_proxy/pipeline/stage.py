"""The stage interface and how a configured list of stages becomes one handler."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from citadel_proxy.pipeline.types import Context, Principal, Reply

if TYPE_CHECKING:
    from citadel_proxy.services import Services

Handler = Callable[[Context], Coroutine[Any, Any, Reply]]
# A pipeline's first step: the headers alone, before the route reads the body; refuses by raising.
Admit = Callable[[Mapping[str, str]], Coroutine[Any, Any, Principal | None]]


class Stage(Protocol):
    """One step of a pipeline, in the `(ctx, call_next)` shape of Starlette and aiohttp middleware.

    A stage may answer without calling `call_next` (auth refusing, a cache hit), change the context
    before it, and look at or wrap the reply after it. Per-request state lives on the context, never on
    the stage, since one stage instance serves every request of its pipeline.
    """

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply: ...


@runtime_checkable
class Admission(Protocol):
    """A stage that can refuse a request from its headers alone, before the route reads the body."""

    async def admit(self, headers: Mapping[str, str]) -> Principal | None: ...


class StageSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every stage's settings struct: unknown keys in YAML are errors."""


@dataclass(frozen=True, slots=True)
class StageType:
    """A stage as the registry knows it: its YAML name, its settings, and how to build it."""

    name: str
    settings: type[StageSettings]
    build: Callable[[Any, Services], Stage]
    # Checked at load time against the other stages of the same pipeline; returns a problem or None.
    check: Callable[[Any, Sequence[str]], str | None] | None = None


def admission(stages: Sequence[Stage]) -> Admit | None:
    """The admissions among `stages` (auth), in their order, as one step; None when there are none.

    A caller refused here costs no body read or decode; the route records the refusal (counted,
    logged, audited) as it does any answered before the handler runs.
    """
    admissions = [stage for stage in stages if isinstance(stage, Admission)]
    if not admissions:
        return None
    if len(admissions) == 1:
        # The usual pipeline (one auth stage): its own admit, not a coroutine around it per request.
        return admissions[0].admit

    async def admit(headers: Mapping[str, str]) -> Principal | None:
        principal = None
        for step in admissions:
            principal = await step.admit(headers) or principal
        return principal

    return admit


def chain(stages: Sequence[Stage], terminal: Handler) -> Handler:
    """Fold stages around the terminal handler, first stage outermost (as Starlette builds middleware)."""
    handler = terminal
    for stage in reversed(stages):
        handler = partial(stage, call_next=handler)
    return handler
