"""LangChain's OpenAI clients against a running gateway, over real HTTP, as an application uses them."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import SecretStr

from tests.compat.conftest import EMBED_MODEL
from tests.core.conftest import TEST_KEY, Gateway
from tests.fakes.ollama import Behavior, embedding_vector


def chat_model(gw: Gateway, base: str = "/v1") -> ChatOpenAI:
    return ChatOpenAI(model="phi3", base_url=gw.url + base, api_key=SecretStr(TEST_KEY), max_retries=0)


async def test_invoke_gets_an_ai_message(gateway: Gateway) -> None:
    answer = await asyncio.to_thread(chat_model(gateway).invoke, "hi")
    assert isinstance(answer, AIMessage)
    assert answer.content == "Hello, world!"
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0


async def test_batch_gets_one_answer_per_input(gateway: Gateway) -> None:
    answers = await asyncio.to_thread(chat_model(gateway).batch, ["one", "two", "three"])
    assert [a.content for a in answers] == ["Hello, world!"] * 3


async def test_stream_gets_the_answer_in_chunks(gateway: Gateway) -> None:
    gateway.fake.next(Behavior.counted(6))
    chunks = await asyncio.to_thread(lambda: list(chat_model(gateway).stream("hi")))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "w0 w1 w2 w3 w4 w5 "


async def test_ainvoke_and_astream_through_an_agent_profile(gateway: Gateway) -> None:
    """The voice profile streams by default; LangChain asks for a whole answer and gets one."""
    answer = await chat_model(gateway, "/v1/voice").ainvoke("hi")
    assert answer.content == "Hello, world!"
    chunks = [chunk async for chunk in chat_model(gateway, "/v1/gui").astream("hi")]
    assert "".join(str(c.content) for c in chunks) == "Hello, world!"


async def test_openai_embeddings_with_text_input(gateway: Gateway) -> None:
    # Left on, check_embedding_ctx_length sends token ids counted by tiktoken, which downloads its
    # encodings from the internet; Ollama embeds text, so the gateway needs text (README, Endpoints).
    embeddings = OpenAIEmbeddings(
        model=EMBED_MODEL,
        base_url=gateway.url + "/v1",
        api_key=SecretStr(TEST_KEY),
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = await asyncio.to_thread(embeddings.embed_documents, ["alpha", "beta"])
    query = await embeddings.aembed_query("alpha")
    want = embedding_vector(EMBED_MODEL, "alpha", 768, normalize=True)
    assert len(vectors) == 2 and all(abs(a - b) < 1e-6 for a, b in zip(vectors[0], want, strict=True))
    assert all(abs(a - b) < 1e-6 for a, b in zip(query, want, strict=True))
