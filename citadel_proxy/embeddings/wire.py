"""Embeddings requests and answers as typed structs: Ollama's two endpoints, OpenAI's, and what goes upstream.

Client structs accept unknown fields, as Ollama and OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from citadel_proxy.pipeline.request import KeepAlive

Model = Annotated[str, Meta(min_length=1)]
Dimensions = Annotated[int, Meta(ge=1)]


class EmbedBody(msgspec.Struct, frozen=True, kw_only=True):
    """POST /api/embed."""

    model: Model
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: Dimensions | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsBody(msgspec.Struct, frozen=True, kw_only=True):
    """POST /api/embeddings, the older endpoint: one prompt (5.2)."""

    model: Model
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class OpenAIEmbeddingsBody(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/embeddings (9.5). Token arrays as input are refused: Ollama takes text only."""

    model: Model
    # Token ids are decoded only to be refused with a message that says what to send instead.
    input: str | list[str | int | list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None


# Any of the three request shapes, as a pipeline context carries it.
EmbeddingsRequest = EmbedBody | EmbeddingsBody | OpenAIEmbeddingsBody


class EmbedAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0


class EmbeddingsAnswer(msgspec.Struct, frozen=True):
    embedding: list[float]


class OpenAIEmbedding(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "embedding"
    # A list of floats, or (encoding_format base64) the little-endian float32 bytes in base64.
    embedding: list[float] | str
    index: int


class OpenAIUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class UpstreamEmbed(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the gateway sends to /api/embed: only the inputs the cache could not answer."""

    model: str
    input: list[str] | None = None
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class UpstreamEmbeddings(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class UpstreamEmbedAnswer(msgspec.Struct, frozen=True):
    embeddings: list[list[float]] = msgspec.field(default_factory=list)
    prompt_eval_count: int = 0


class UpstreamEmbeddingsAnswer(msgspec.Struct, frozen=True):
    embedding: list[float] = msgspec.field(default_factory=list)
