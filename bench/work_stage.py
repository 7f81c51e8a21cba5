"""A bench-only pipeline stage that runs a known amount of plain Python work per request.

`bench.stage_cpu` and `bench.variants` add it to a variant written `VARIANT+UNITS` (`bare+100`): the
worker's CPU a chat then grows by what UNITS units of interpreted work cost inside a serving gateway,
which sets the gateway's own stages beside work whose instructions are known. A unit makes an object,
calls a function, reads an attribute and a dict: the interpreter's common steps, on data that stays in
the first-level caches.

Not part of the gateway: `python -m bench.work_stage serve ...` registers the stage and runs
`citadel-proxy` as usual, one worker (a worker started by the supervisor would not have it).
`python -m bench.work_stage --units N` runs N units once and exits: under callgrind, two such counts'
difference is the instructions of a unit (README, Performance).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from msgspec import Meta

from bench.procs import rewrite_pipelines
from citadel_proxy.pipeline.stage import Handler, StageSettings, StageType
from citadel_proxy.pipeline.types import Context, Reply

NAME = "bench_work"


class WorkSettings(StageSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    units: Annotated[int, Meta(ge=0)] = 0


class _Item:
    __slots__ = ("key", "number")

    def __init__(self, number: int, key: str) -> None:
        self.number, self.key = number, key


def _step(item: _Item, table: dict[str, int]) -> int:
    return item.number + table.get(item.key, 0)


def work(units: int) -> int:
    table = {"a": 1, "b": 2}
    total = 0
    for number in range(units):
        total += _step(_Item(number, "a"), table)
    return total


@dataclass(frozen=True, slots=True)
class WorkStage:
    units: int

    async def __call__(self, ctx: Context, call_next: Handler) -> Reply:
        work(self.units)
        return await call_next(ctx)


def _build(settings: WorkSettings, _services: Any) -> WorkStage:
    return WorkStage(settings.units)


STAGE = StageType(name=NAME, settings=WorkSettings, build=_build)


def add_to_pipelines(folder: Path, units: int) -> None:
    """Put the stage first in every pipeline file in `folder`."""

    def first(spec: Any) -> None:
        spec["stages"] = [{NAME: {"units": units}}, *(spec.get("stages") or [])]

    rewrite_pipelines(folder, first, source=folder)


def register() -> None:
    """Make the stage one that pipeline files may name, in this process."""
    import citadel_proxy.app as app
    from citadel_proxy.stages import registry

    listed = registry.stage_types

    def with_work() -> dict[str, StageType]:
        return {**listed(), NAME: STAGE}

    # The app imported the function by name: its own reference is replaced too.
    app.stage_types = registry.stage_types = with_work  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["--units"]:
        work(int(words[1]))
        return 0
    register()
    from citadel_proxy.cli import main as citadel_proxy

    return citadel_proxy(words)


if __name__ == "__main__":
    sys.exit(main())
