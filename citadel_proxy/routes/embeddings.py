"""Embeddings routes (Ollama's /api/embed and /api/embeddings, OpenAI's /v1/embeddings), run by a pipeline.

Which wire shape a route speaks follows from its path's ending, so a pipeline file may serve the shapes
under other paths too (`/v1/team/embeddings` speaks OpenAI's).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from citadel_proxy import errors
from citadel_proxy.cache.codec import Vector
from citadel_proxy.config.models import ModelRouter
from citadel_proxy.embeddings.wire import (
    EmbedAnswer,
    EmbedBody,
    EmbeddingsAnswer,
    EmbeddingsBody,
    EmbeddingsRequest,
    OpenAIEmbedding,
    OpenAIEmbeddingList,
    OpenAIEmbeddingsBody,
    OpenAIUsage,
)
from citadel_proxy.http.body import decode, read_body
from citadel_proxy.http.json_depth import check_depth
from citadel_proxy.http.responses import json_response
from citadel_proxy.pipeline.options import with_model_defaults
from citadel_proxy.pipeline.request import InferenceRequest, Options
from citadel_proxy.pipeline.table import BuiltPipeline
from citadel_proxy.pipeline.types import Context
from citadel_proxy.routes.inference import admit, caller, complete_logged
from citadel_proxy.services import Services

Parse = Callable[[bytes, ModelRouter], tuple[EmbeddingsRequest, InferenceRequest]]
Render = Callable[[Context, EmbeddingsRequest, list[Vector]], Any]

_embed_decoder = msgspec.json.Decoder(EmbedBody)
_embeddings_decoder = msgspec.json.Decoder(EmbeddingsBody)
_openai_decoder = msgspec.json.Decoder(OpenAIEmbeddingsBody)
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Shape:
    parse: Parse
    render: Render


async def embeddings_route(request: Request) -> Response:
    """A route listed in a pipeline file of `format: embeddings`."""
    services: Services = request.state.services
    route: str = request.scope["route"].path
    built = services.pipelines.current.by_route.get(route)
    if built is None or built.spec.format != "embeddings":
        raise errors.NotFound(f"no embeddings pipeline serves {route} since the last reload")
    shape = shape_of(route)
    tracer = services.tracing
    trace = None if tracer is None else tracer.begin(request, built.spec.name, route)
    principal = await admit(request, built, trace)
    body = await read_body(request, services.config.gateway.max_body_bytes)
    wire, neutral = shape.parse(body, services.models)
    neutral = with_model_defaults(neutral, services.models, built.spec)
    del body  # decoded: a large body is not kept while the answer is awaited
    if neutral.options is not None and neutral.options.extra:
        check_depth(_encode(neutral.options.extra), services.config.gateway.max_json_depth, "options")
    ctx = _context(request, built, route, wire, neutral)
    ctx.principal, ctx.trace = principal, trace
    request.state.access_logged = True
    reply = await complete_logged(request, ctx, built, services.deadlines)
    if reply.embeddings is None:
        raise errors.GatewayError("an embeddings pipeline ended without its vectors")
    return json_response(shape.render(ctx, wire, reply.embeddings), headers=ctx.response_headers)


def _context(
    request: Request, built: BuiltPipeline, route: str, wire: EmbeddingsRequest, neutral: InferenceRequest
) -> Context:
    request_id, client = caller(request)
    model_requested: str = getattr(wire, "model", "")
    return Context(
        request_id, built.spec, route, client, request.headers, neutral,
        model_requested, neutral.model, False,
    )  # fmt: skip


def _parse_embed(body: bytes, models: ModelRouter) -> tuple[EmbeddingsRequest, InferenceRequest]:
    wire = decode(body, _embed_decoder)
    given = wire.input
    inputs = ([given] if given else []) if isinstance(given, str) or given is None else list(given)
    neutral = InferenceRequest(
        kind="embed", model=models.resolve(wire.model), input=inputs, truncate=wire.truncate,
        dimensions=wire.dimensions, options=_options(wire.options), keep_alive=wire.keep_alive,
    )  # fmt: skip
    return wire, neutral


def _parse_embeddings(body: bytes, models: ModelRouter) -> tuple[EmbeddingsRequest, InferenceRequest]:
    wire = decode(body, _embeddings_decoder)
    inputs = [wire.prompt] if wire.prompt else []
    neutral = InferenceRequest(
        kind="embed",
        model=models.resolve(wire.model),
        input=inputs,
        options=_options(wire.options),
        keep_alive=wire.keep_alive,
        normalize=False,
    )
    return wire, neutral


def _options(given: dict[str, Any] | None) -> Options | None:
    # A native body's options are runner settings for Ollama, passed on as given.
    return Options(extra=given) if given else None


def _parse_openai(body: bytes, models: ModelRouter) -> tuple[EmbeddingsRequest, InferenceRequest]:
    wire = decode(body, _openai_decoder)
    inputs = [wire.input] if isinstance(wire.input, str) else wire.input
    if not inputs:
        raise errors.InvalidRequest("input: give a string or a non-empty list of strings", param="input")
    if not all(isinstance(text, str) for text in inputs):
        raise errors.UnsupportedParameter(
            "input: token ids are not supported, Ollama embeds text: send strings (LangChain's "
            "OpenAIEmbeddings: check_embedding_ctx_length=False)",
            param="input",
        )
    texts = cast(list[str], inputs)
    neutral = InferenceRequest(
        kind="embed", model=models.resolve(wire.model), input=texts, dimensions=wire.dimensions
    )
    return wire, neutral


def _render_embed(ctx: Context, _wire: EmbeddingsRequest, vectors: list[Vector]) -> EmbedAnswer:
    return EmbedAnswer(
        model=ctx.model,
        embeddings=[vector.floats() for vector in vectors],
        total_duration=int((time.perf_counter() - ctx.started) * 1e9),
        prompt_eval_count=sum(vector.tokens for vector in vectors),
    )


def _render_embeddings(_ctx: Context, _wire: EmbeddingsRequest, vectors: list[Vector]) -> EmbeddingsAnswer:
    return EmbeddingsAnswer(vectors[0].floats() if vectors else [])


def _render_openai(ctx: Context, wire: EmbeddingsRequest, vectors: list[Vector]) -> OpenAIEmbeddingList:
    as_base64 = isinstance(wire, OpenAIEmbeddingsBody) and wire.encoding_format == "base64"
    data = [
        OpenAIEmbedding(
            embedding=base64.b64encode(vector.packed).decode() if as_base64 else vector.floats(), index=index
        )
        for index, vector in enumerate(vectors)
    ]
    tokens = sum(vector.tokens for vector in vectors)
    return OpenAIEmbeddingList(data=data, model=ctx.model, usage=OpenAIUsage(tokens, tokens))


_SHAPES = {
    "/api/embeddings": Shape(_parse_embeddings, _render_embeddings),
    "/api/embed": Shape(_parse_embed, _render_embed),
    "/embeddings": Shape(_parse_openai, _render_openai),
}


def shape_of(route: str) -> Shape:
    """By the path's ending: `/api/embeddings`, `/api/embed`, anything else is OpenAI's shape."""
    for ending, shape in _SHAPES.items():
        if route.endswith(ending):
            return shape
    return _SHAPES["/embeddings"]
