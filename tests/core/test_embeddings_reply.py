"""An embed request's vectors come back in the pipeline's reply, in input order, from the fake Ollama."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.datastructures import Headers

from citadel_proxy.cache.codec import Vector, pack
from citadel_proxy.config.schema import OllamaService
from citadel_proxy.embeddings.terminal import with_embeddings
from citadel_proxy.fleet.fleet import one_backend
from citadel_proxy.pipeline.request import InferenceRequest, Options
from citadel_proxy.pipeline.types import Context, Reply
from citadel_proxy.upstream.client import OllamaClient
from tests.fakes.ollama import FakeOllama, embedding_vector

MODEL = "nomic-embed-text:latest"


@pytest.fixture
async def client(fake: FakeOllama) -> AsyncIterator[OllamaClient]:
    client = OllamaClient(OllamaService(port=int(fake.url.rsplit(":", 1)[1])))
    await client.open()
    try:
        yield client
    finally:
        await client.close()


def context(request: InferenceRequest) -> Context:
    return Context(
        request_id="req-1",
        pipeline=None,  # type: ignore[arg-type]
        route="/api/embed",
        client="127.0.0.1",
        headers=Headers({}),
        request=request,
        model_requested=request.model,
        model=request.model,
        stream=False,
    )


async def not_embed(_ctx: Context) -> Reply:
    raise AssertionError("an embed request reached the chat terminal")


async def test_vectors_come_back_in_the_reply_in_input_order(fake: FakeOllama, client: OllamaClient) -> None:
    texts = ["gamma", "alpha", "a longer text"]
    request = InferenceRequest(
        kind="embed", model=MODEL, input=texts, options=Options(extra={"num_ctx": 2048}), keep_alive="1m"
    )
    ctx = context(request)
    reply = await with_embeddings(not_embed, one_backend(client))(ctx)
    assert reply.embeddings is not None and reply.completion is not None
    assert [vector.packed for vector in reply.embeddings] == [
        pack(embedding_vector(MODEL, text, 768)) for text in texts
    ]
    tokens = sum(vector.tokens for vector in reply.embeddings)
    assert tokens > 0 and reply.completion.prompt_tokens == ctx.outcome.prompt_tokens == tokens
    [sent] = [r.json for r in fake.requests if r.path == "/api/embed"]
    assert sent == {"model": MODEL, "input": texts, "options": {"num_ctx": 2048}, "keep_alive": "1m"}
    assert ctx.request is request  # the request is never written into


async def test_unnormalised_vectors_one_call_per_text(fake: FakeOllama, client: OllamaClient) -> None:
    request = InferenceRequest(kind="embed", model=MODEL, input=["one", "two"], normalize=False)
    reply = await with_embeddings(not_embed, one_backend(client))(context(request))
    assert reply.embeddings == [
        Vector(pack(embedding_vector(MODEL, text, 768, normalize=False))) for text in ("one", "two")
    ]
    assert sorted(r.json["prompt"] for r in fake.requests if r.path == "/api/embeddings") == ["one", "two"]


async def test_no_input_loads_the_model_and_answers_no_vectors(
    fake: FakeOllama, client: OllamaClient
) -> None:
    reply = await with_embeddings(not_embed, one_backend(client))(
        context(InferenceRequest(kind="embed", model=MODEL))
    )
    assert reply.embeddings == [] and fake.count("/api/embed") == 1
