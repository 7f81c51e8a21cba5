"""bench.work_stage: the bench-only stage of known Python work, put first in every pipeline of a variant."""

from __future__ import annotations

from pathlib import Path

from bench.procs import bare_pipelines
from bench.work_stage import NAME, STAGE, WorkSettings, WorkStage, add_to_pipelines, register, work
from citadel_proxy.pipeline.spec import load_pipelines
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.stages import registry
from tests.auth.conftest import make_ctx


def test_a_unit_is_the_same_work_every_time() -> None:
    assert work(0) == 0
    assert work(3) == (0 + 1) + (1 + 1) + (2 + 1)


def test_the_stage_goes_first_in_every_pipeline_and_loads_where_registered(tmp_path: Path) -> None:
    folder = bare_pipelines(tmp_path)
    add_to_pipelines(folder, 7)

    types = {**registry.stage_types(), NAME: STAGE}
    pipelines = load_pipelines(folder, types, 60.0).all

    assert pipelines
    for pipeline in pipelines:
        first = pipeline.stages[0]
        assert (first.type.name, first.settings) == (NAME, WorkSettings(units=7))


async def test_the_stage_works_then_hands_on() -> None:
    seen: list[Context] = []

    async def answer(ctx: Context) -> Reply:
        seen.append(ctx)
        return Reply(completion=Completion(content="ok"))

    ctx = make_ctx()
    reply = await WorkStage(50)(ctx, answer)

    assert seen == [ctx] and reply.completion is not None


def test_register_adds_the_stage_to_the_gateways_list() -> None:
    import citadel_proxy.app as app

    listed = registry.stage_types
    try:
        register()
        assert NAME in app.stage_types() and NAME in registry.stage_types()  # type: ignore[attr-defined]
        assert set(registry.stage_types()) - {NAME} == set(listed())
    finally:
        app.stage_types = registry.stage_types = listed  # type: ignore[attr-defined]
