"""A pipeline's first step: its admissions (auth) folded into one check of the headers."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from citadel_proxy import errors
from citadel_proxy.pipeline.stage import Handler, admission
from citadel_proxy.pipeline.types import Context, Principal, Reply


class Passing:
    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        return await call_next(ctx)


class Admitting(Passing):
    def __init__(self, name: str | None, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    async def admit(self, headers: Mapping[str, str]) -> Principal | None:
        self.seen.append(str(self.name))
        if headers.get("x-refuse"):
            raise errors.AuthenticationFailed("refused")
        return Principal(self.name, frozenset()) if self.name else None


def test_a_pipeline_without_admissions_has_no_first_step() -> None:
    assert admission([]) is None
    assert admission([Passing()]) is None


async def test_admissions_run_in_pipeline_order_and_the_last_named_caller_wins() -> None:
    seen: list[str] = []
    admit = admission([Admitting("a", seen), Passing(), Admitting(None, seen), Admitting("b", seen)])
    assert admit is not None
    principal = await admit({})
    assert principal is not None and principal.name == "b" and seen == ["a", "None", "b"]
    only_first = admission([Admitting("a", seen), Admitting(None, seen)])
    assert only_first is not None
    first = await only_first({})
    assert first is not None and first.name == "a"


async def test_a_refusal_stops_the_step() -> None:
    seen: list[str] = []
    admit = admission([Admitting("a", seen), Admitting("b", seen)])
    assert admit is not None
    with pytest.raises(errors.AuthenticationFailed):
        await admit({"x-refuse": "1"})
    assert seen == ["a"]


async def test_a_single_admission_is_that_stages_own_step() -> None:
    seen: list[str] = []
    stage = Admitting("a", seen)
    admit = admission([Passing(), stage])
    assert admit == stage.admit  # no step wrapped around it
    principal = await admit({})
    assert principal is not None and principal.name == "a" and seen == ["a"]
