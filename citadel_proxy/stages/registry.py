"""Every stage a pipeline file may name. Adding a stage: write its module, then list its STAGE here."""

from __future__ import annotations

from citadel_proxy.pipeline.stage import StageType
from citadel_proxy.stages import audit, auth, cache, chunking, context_guard, metrics, rate_limit


def stage_types() -> dict[str, StageType]:
    stages = [audit.STAGE, metrics.STAGE, auth.STAGE, rate_limit.STAGE, chunking.STAGE, cache.STAGE]
    stages.append(context_guard.STAGE)
    return {stage.name: stage for stage in stages}
