"""One embeddings request as the pipeline sees it: inputs in the caller's order, vectors filled in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from citadel_proxy import errors
from citadel_proxy.cache.codec import Vector
from citadel_proxy.pipeline.types import Context

# /api/embed normalises its vectors; the older /api/embeddings does not (ollama-protocol.md 5.2).
EmbedEndpoint = Literal["/api/embed", "/api/embeddings"]


@dataclass(slots=True)
class EmbedJob:
    """Carried as `ctx.upstream` through an embeddings pipeline.

    The cache stage fills `vectors` it finds and sets `todo` to the inputs the terminal must embed;
    without a cache stage `todo` stays None and the terminal embeds every input.
    """

    endpoint: EmbedEndpoint
    model: str
    inputs: list[str]
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None
    vectors: list[Vector | None] = field(init=False)
    todo: list[int] | None = None

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.inputs)

    def pending(self) -> list[int]:
        return list(range(len(self.inputs))) if self.todo is None else self.todo

    def results(self) -> list[Vector]:
        """Every vector, in input order, once the pipeline has run."""
        done = [v for v in self.vectors if v is not None]
        if len(done) != len(self.vectors):
            raise errors.GatewayError("an embeddings pipeline ended without a vector for every input")
        return done


def job_of(ctx: Context) -> EmbedJob | None:
    upstream: object = ctx.upstream
    return upstream if isinstance(upstream, EmbedJob) else None
