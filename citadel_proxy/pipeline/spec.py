"""Pipeline files (`pipelines/*.yaml`): which route runs which stages, in which format, with what deadline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from citadel_proxy.config.loader import load_struct
from citadel_proxy.config.yamlsource import YamlSource, YamlSourceError, read_yaml
from citadel_proxy.pipeline.stage import StageSettings, StageType

# embeddings: /api/embed, /api/embeddings and /v1/embeddings shapes (routes/embeddings.py). The other
# client protocols (routes/formats.py): ollama-chat and ollama-generate (Ollama's /api/chat and
# /api/generate, NDJSON streams), anthropic-messages (Anthropic's /v1/messages), openai-responses
# (OpenAI's /v1/responses, stateless).
Format = Literal[
    "chat",
    "completion",
    "embeddings",
    "ollama-chat",
    "ollama-generate",
    "anthropic-messages",
    "openai-responses",
]
# The formats an agent profile may have: /v1/agents/stream and /v1/<profile>/… speak OpenAI's.
_AGENT_FORMATS = ("chat", "completion")


class PipelineFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
    format: Format = "chat"
    # Paths this pipeline serves; an agent profile may have none and be reached by /v1/agents/stream.
    routes: list[Annotated[str, Meta(pattern=r"^/")]] = msgspec.field(default_factory=list)
    # Selectable as /v1/agents/stream?type=<file name>.
    agent: bool = False
    # Whether a request that does not say `stream` gets a stream (agent routes stream by default).
    stream_default: bool = False
    # The deadline of the whole exchange in seconds (the specification's `timeout`); none: gateway.timeout.
    timeout: Annotated[float, Meta(gt=0)] | None = None
    stages: list[str | dict[str, Any]] = msgspec.field(default_factory=list)
    # Ollama's runtime options for this pipeline's requests (num_ctx, top_k, …) and how long the model
    # stays loaded: over the model's configured defaults, under what a request sets.
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None
    # Admission (README "Admission and priorities"): the higher class starts first when backends are
    # full; a request waits in the gateway's queue at most max_queue_ms (0: refused at once, 503).
    priority: Annotated[int, Meta(ge=0, le=100)] = 2
    max_queue_ms: Annotated[int, Meta(ge=0)] = 0
    # Models tried in order when the requested one cannot be admitted in time (every backend full).
    fallback_models: list[str] = msgspec.field(default_factory=list)
    # A new request of the same key and X-Session-ID cancels the one still running (latest wins).
    supersede: bool = False


@dataclass(frozen=True, slots=True)
class ConfiguredStage:
    type: StageType
    settings: StageSettings


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    file: str
    format: Format
    routes: tuple[str, ...]
    agent: bool
    stream_default: bool
    timeout_s: float
    description: str
    stages: tuple[ConfiguredStage, ...]
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None
    priority: int = 2
    max_queue_ms: int = 0
    fallback_models: tuple[str, ...] = ()
    supersede: bool = False

    def settings_of(self, stage_name: str) -> StageSettings | None:
        return next((s.settings for s in self.stages if s.type.name == stage_name), None)


def load_pipeline(path: Path, registry: dict[str, StageType], default_timeout_s: float) -> Pipeline:
    source = read_yaml(path)
    if source.data is None:
        raise source.error((), "the file is empty")
    spec = load_struct(source, PipelineFile)
    stages = tuple(_stage(source, index, entry, registry) for index, entry in enumerate(spec.stages))
    if spec.agent and spec.format not in _AGENT_FORMATS:
        raise source.error(("agent",), f"a pipeline of format {spec.format} cannot be an agent profile")
    names = [s.type.name for s in stages]
    for index, stage in enumerate(stages):
        if names.count(stage.type.name) > 1:
            raise source.error(("stages", index), f"stage {stage.type.name!r} is listed twice")
        if stage.type.check is not None and (problem := stage.type.check(stage.settings, names)):
            raise source.error(("stages", index), problem)
    return Pipeline(
        name=path.stem,
        file=str(path),
        format=spec.format,
        routes=tuple(spec.routes),
        agent=spec.agent,
        stream_default=spec.stream_default,
        timeout_s=spec.timeout if spec.timeout is not None else default_timeout_s,
        description=spec.description,
        stages=stages,
        options=spec.options,
        keep_alive=spec.keep_alive,
        priority=spec.priority,
        max_queue_ms=spec.max_queue_ms,
        fallback_models=tuple(spec.fallback_models),
        supersede=spec.supersede,
    )


def _stage(source: YamlSource, index: int, entry: Any, registry: dict[str, StageType]) -> ConfiguredStage:
    at = ("stages", index)
    if isinstance(entry, str):
        name, raw = entry, {}
    elif len(entry) == 1:
        name, raw = next(iter(entry.items()))
        raw = {} if raw is None else raw
    else:
        raise source.error(at, "a stage is a name, or a mapping of one name to its settings")
    stage_type = registry.get(name)
    if stage_type is None:
        known = ", ".join(sorted(registry))
        raise source.error(at, f"unknown stage {name!r} (known: {known})")
    settings = load_struct(source, stage_type.settings, at=(*at, name), data=raw)
    return ConfiguredStage(stage_type, settings)


@dataclass(frozen=True, slots=True)
class PipelineSet:
    """Every pipeline of a folder, indexed by route and by agent type."""

    by_route: dict[str, Pipeline]
    agents: dict[str, Pipeline]
    all: tuple[Pipeline, ...]


def load_pipelines(folder: Path, registry: dict[str, StageType], default_timeout_s: float) -> PipelineSet:
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        raise YamlSourceError(str(folder), None, (), "no pipeline files (*.yaml) found")
    by_route: dict[str, Pipeline] = {}
    pipelines = []
    for path in files:
        pipeline = load_pipeline(path, registry, default_timeout_s)
        for route in pipeline.routes:
            if route in by_route:
                raise YamlSourceError(
                    str(path), None, ("routes",), f"route {route} is already served by {by_route[route].file}"
                )
            by_route[route] = pipeline
        pipelines.append(pipeline)
    agents = {p.name: p for p in pipelines if p.agent}
    return PipelineSet(by_route, agents, tuple(pipelines))
