"""The end of an embeddings pipeline: Ollama's /api/embed (a call per batch) or /api/embeddings (each)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec

from citadel_proxy import errors
from citadel_proxy.cache.codec import Vector, pack
from citadel_proxy.embeddings.job import EmbedJob, job_of
from citadel_proxy.embeddings.wire import (
    UpstreamEmbed,
    UpstreamEmbedAnswer,
    UpstreamEmbeddings,
    UpstreamEmbeddingsAnswer,
)
from citadel_proxy.pipeline.stage import Handler
from citadel_proxy.pipeline.types import Completion, Context, Reply
from citadel_proxy.upstream.client import OllamaClient

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_embed_decoder = msgspec.json.Decoder(UpstreamEmbedAnswer)
_embeddings_decoder = msgspec.json.Decoder(UpstreamEmbeddingsAnswer)


def with_embeddings(other: Handler, client: OllamaClient) -> Handler:
    """The terminal of every pipeline: embeddings jobs go to Ollama's embed endpoints, the rest to `other`."""

    async def terminal(ctx: Context) -> Reply:
        job = job_of(ctx)
        if job is None:
            return await other(ctx)
        tokens = await embed(client, job)
        ctx.outcome.prompt_tokens += tokens
        return Reply(completion=Completion(content="", finish_reason=None, prompt_tokens=tokens))

    return terminal


async def embed(client: OllamaClient, job: EmbedJob) -> int:
    """Embed the job's pending inputs into `job.vectors`; returns the prompt tokens Ollama counted."""
    todo = job.pending()
    texts = [job.inputs[i] for i in todo]
    if job.endpoint == "/api/embed":
        vectors = await _embed(client, job, texts)
    elif texts:
        vectors = list(await asyncio.gather(*(_embeddings(client, job, text) for text in texts)))
    else:
        vectors = []
        await _embeddings(client, job, "")
    for index, vector in zip(todo, vectors, strict=True):
        job.vectors[index] = vector
    return sum(vector.tokens for vector in vectors)


async def _embed(client: OllamaClient, job: EmbedJob, texts: list[str]) -> list[Vector]:
    request = UpstreamEmbed(
        model=job.model,
        input=texts or None,
        truncate=job.truncate,
        dimensions=job.dimensions,
        options=job.options,
        keep_alive=job.keep_alive,
    )
    raw = await client.post("/api/embed", _encode(request))
    answer = _decode(_embed_decoder, raw)
    if len(answer.embeddings) != len(texts) or not all(answer.embeddings):
        raise errors.UpstreamMalformed(
            f"Ollama answered {len(answer.embeddings)} embeddings for {len(texts)} inputs"
        )
    shares = _token_shares(answer.prompt_eval_count, texts)
    return [Vector(pack(v), n) for v, n in zip(answer.embeddings, shares, strict=True)]


async def _embeddings(client: OllamaClient, job: EmbedJob, text: str) -> Vector:
    request = UpstreamEmbeddings(model=job.model, prompt=text, options=job.options, keep_alive=job.keep_alive)
    raw = await client.post("/api/embeddings", _encode(request))
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
