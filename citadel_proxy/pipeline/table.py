"""The pipelines in force: built once at start, swapped whole on reload while old requests finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from citadel_proxy.pipeline.spec import Pipeline, PipelineSet
from citadel_proxy.pipeline.stage import Admit, Handler, admission, chain

if TYPE_CHECKING:
    from citadel_proxy.services import Services


@dataclass(frozen=True, slots=True)
class BuiltPipeline:
    """A pipeline's two steps: `admit` on the headers before the body is read, then `handler`."""

    spec: Pipeline
    handler: Handler
    # The first step: the stages that check headers alone (auth), in pipeline order; None without any.
    admit: Admit | None = None


@dataclass(frozen=True, slots=True)
class BuiltPipelines:
    by_route: dict[str, BuiltPipeline]
    agents: dict[str, BuiltPipeline]


def build(pipelines: PipelineSet, services: Services, terminal: Handler) -> BuiltPipelines:
    built = {p.name: _build_one(p, services, terminal) for p in pipelines.all}
    return BuiltPipelines(
        by_route={route: built[p.name] for route, p in pipelines.by_route.items()},
        agents={name: built[name] for name in pipelines.agents},
    )


def _build_one(pipeline: Pipeline, services: Services, terminal: Handler) -> BuiltPipeline:
    stages = [configured.type.build(configured.settings, services) for configured in pipeline.stages]
    return BuiltPipeline(pipeline, chain(stages, terminal), admission(stages))


class PipelineTable:
    """Holds the current BuiltPipelines; a request reads `current` once and keeps what it got."""

    def __init__(self) -> None:
        self._current = BuiltPipelines({}, {})

    @property
    def current(self) -> BuiltPipelines:
        return self._current

    def install(self, built: BuiltPipelines) -> None:
        self._current = built
