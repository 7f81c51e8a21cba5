"""The end of an embeddings pipeline: Ollama's /api/embed (a call per batch) or /api/embeddings (each)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import TypeVar

import msgspec

from citadel_proxy import errors
from citadel_proxy.cache.codec import Vector, pack
from citadel_proxy.embeddings.wire import UpstreamEmbedAnswer, UpstreamEmbeddingsAnswer
from citadel_proxy.fleet.dispatch import dispatch
from citadel_proxy.fleet.fleet import Fleet
from citadel_proxy.pipeline.request import InferenceRequest
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.upstream.client import OllamaClient
from citadel_proxy.upstream.translate import embed_to_ollama, embeddings_to_ollama

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_embed_decoder = msgspec.json.Decoder(UpstreamEmbedAnswer)
_embeddings_decoder = msgspec.json.Decoder(UpstreamEmbeddingsAnswer)


def with_embeddings(other: Handler, fleet: Fleet) -> Handler:
    """The terminal of every pipeline: embed requests go to Ollama's embed endpoints, the rest to `other`."""

    async def terminal(ctx: Context) -> Reply:
        if ctx.request.kind != "embed":
            return await other(ctx)
        return await dispatch(fleet, ctx, functools.partial(_embedded, ctx))

    return terminal


async def _embedded(ctx: Context, client: OllamaClient) -> Reply:
    trace = ctx.trace
    if trace is not None:
        service = client.service
        call = functools.partial(_embed_with, ctx, client)
        return await trace.attempt_upstream(service.host, service.port, call)
    return await _embed_with(ctx, client)


async def _embed_with(ctx: Context, client: OllamaClient, headers: Mapping[str, str] | None = None) -> Reply:
    vectors = await embed(client, ctx.request, headers)
    tokens = sum(vector.tokens for vector in vectors)
    ctx.outcome.prompt_tokens += tokens
    completion = Completion(content="", finish_reason=None, prompt_tokens=tokens)
    return Reply(completion=completion, embeddings=vectors)


async def embed(
    client: OllamaClient, request: InferenceRequest, headers: Mapping[str, str] | None = None
) -> list[Vector]:
    """The request's inputs embedded, in their order, each with its share of the prompt tokens."""
    texts = request.inputs()
    if request.normalize:
        return await _embed(client, request, texts, headers)
    if texts:
        return list(await asyncio.gather(*(_embeddings(client, request, text, headers) for text in texts)))
    await _embeddings(client, request, "", headers)
    return []


async def _embed(
    client: OllamaClient, request: InferenceRequest, texts: list[str], headers: Mapping[str, str] | None
) -> list[Vector]:
    raw = await client.post("/api/embed", _encode(embed_to_ollama(request)), headers)
    answer = _decode(_embed_decoder, raw)
    if len(answer.embeddings) != len(texts) or not all(answer.embeddings):
        raise errors.UpstreamMalformed(
            f"Ollama answered {len(answer.embeddings)} embeddings for {len(texts)} inputs"
        )
    shares = _token_shares(answer.prompt_eval_count, texts)
    return [Vector(pack(v), n) for v, n in zip(answer.embeddings, shares, strict=True)]


async def _embeddings(
    client: OllamaClient, request: InferenceRequest, text: str, headers: Mapping[str, str] | None
) -> Vector:
    raw = await client.post("/api/embeddings", _encode(embeddings_to_ollama(request, text)), headers)
    answer = _decode(_embeddings_decoder, raw)
    if text and not answer.embedding:
        raise errors.UpstreamMalformed("Ollama answered an empty embedding")
    # This endpoint reports no token count; a cached vector is charged nothing either way.
    return Vector(pack(answer.embedding))


def _decode(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise errors.UpstreamMalformed(f"Ollama's embeddings answer is not valid: {exc}") from None


def _token_shares(total: int, texts: list[str]) -> list[int]:
    """Ollama counts a batch's tokens as one total; each input gets a share by length, for usage of hits."""
    if len(texts) <= 1:
        return [total] * len(texts)
    lengths = [len(text) or 1 for text in texts]
    whole = sum(lengths)
    shares = [total * length // whole for length in lengths]
    shares[-1] += total - sum(shares)
    return shares
