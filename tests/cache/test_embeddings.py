"""Embeddings through the gateway, cached on the shared Redis, driven by the ollama and openai clients."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator

import httpx
import ollama
import openai
import pytest
import redis as redis_sync

from citadel_proxy.cache.keys import embedding_key
from tests.cache.conftest import EMBED_MODEL, OTHER_EMBED_MODEL
from tests.core.conftest import AUTH, TEST_KEY, Gateway
from tests.fakes.ollama import embedding_vector


@pytest.fixture
async def oll(gateway: Gateway) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=gateway.url, headers=AUTH) as client:
        yield client


@pytest.fixture
async def oai(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TEST_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        yield client


def close(got: list[float], want: list[float]) -> bool:
    """Stored as float32: equal to Ollama's float32 values, within float32 precision of the JSON text."""
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))


def expected(text: str, dims: int = 768, model: str = EMBED_MODEL, normalize: bool = True) -> list[float]:
    return embedding_vector(model, text, dims, normalize=normalize)


async def test_batch_sends_only_missing_inputs_and_keeps_order(
    gateway: Gateway, oll: ollama.AsyncClient
) -> None:
    first = await oll.embed(model="nomic-embed-text", input=["alpha", "beta"])
    assert gateway.fake.embed_inputs == ["alpha", "beta"]
    second = await oll.embed(model="nomic-embed-text", input=["gamma", "beta", "alpha", "gamma"])
    # Only the new text went upstream, once although it was given twice.
    assert gateway.fake.embed_inputs == ["alpha", "beta", "gamma"]
    assert second.embeddings[1] == first.embeddings[1] and second.embeddings[2] == first.embeddings[0]
    assert second.embeddings[0] == second.embeddings[3]
    for text, vector in zip(["gamma", "beta", "alpha", "gamma"], second.embeddings, strict=True):
        assert close(list(vector), expected(text))


async def test_x_cache_and_usage(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = {"model": "nomic-embed-text", "input": ["one", "two three"]}
    miss = await http.post("/v1/embeddings", json=body)
    hit = await http.post("/v1/embeddings", json=body)
    assert miss.status_code == hit.status_code == 200
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    # A hit answers exactly what the miss did, usage included.
    assert miss.json() == hit.json()
    assert miss.json()["usage"]["prompt_tokens"] > 0
    partial = await http.post("/v1/embeddings", json={**body, "input": ["one", "four"]})
    assert partial.headers["x-cache"] == "MISS"
    assert partial.json()["data"][0] == hit.json()["data"][0]
    assert gateway.fake.embed_inputs == ["one", "two three", "four"]
    metrics = (await http.get("/metrics")).text
    assert 'citadel_cache_hits_total{cache="embeddings"} 3.0' in metrics
    assert 'citadel_cache_misses_total{cache="embeddings"} 3.0' in metrics


async def test_openai_float_and_base64(gateway: Gateway, oai: openai.AsyncOpenAI) -> None:
    floats = await oai.embeddings.create(model="nomic-embed-text", input=["north", "south"])
    assert [d.index for d in floats.data] == [0, 1] and floats.model == EMBED_MODEL
    assert close(floats.data[0].embedding, expected("north"))
    packed = await oai.embeddings.create(model="nomic-embed-text", input="south", encoding_format="base64")
    raw = base64.b64decode(packed.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats.data[1].embedding
    assert gateway.fake.embed_inputs == ["north", "south"]


async def test_legacy_endpoint_has_its_own_keys(gateway: Gateway, oll: ollama.AsyncClient) -> None:
    legacy = await oll.embeddings(model="nomic-embed-text", prompt="same text")
    again = await oll.embeddings(model="nomic-embed-text", prompt="same text")
    assert legacy.embedding == again.embedding
    assert close(list(legacy.embedding), expected("same text", normalize=False))
    # /api/embed normalises its vectors: a vector from the older endpoint must not answer it.
    current = await oll.embed(model="nomic-embed-text", input="same text")
    assert close(list(current.embeddings[0]), expected("same text"))
    assert gateway.fake.embed_inputs == ["same text", "same text"]
    assert gateway.fake.count("/api/embeddings") == 1 and gateway.fake.count("/api/embed") == 1


async def test_keys_separate_models_and_dimensions(gateway: Gateway, oll: ollama.AsyncClient) -> None:
    full = await oll.embed(model="nomic-embed-text", input="text")
    cut = await oll.embed(model="nomic-embed-text", input="text", dimensions=16)
    other = await oll.embed(model=OTHER_EMBED_MODEL, input="text")
    assert len(full.embeddings[0]) == 768 and len(cut.embeddings[0]) == 16
    assert close(list(cut.embeddings[0]), expected("text", 16))
    assert close(list(other.embeddings[0]), expected("text", model=OTHER_EMBED_MODEL))
    assert gateway.fake.embed_inputs == ["text"] * 3
    again = await oll.embed(model="nomic-embed-text", input="text", dimensions=16)
    assert again.embeddings == cut.embeddings and len(gateway.fake.embed_inputs) == 3


async def test_ttl_expiry(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = {"model": "nomic-embed-text", "input": "short lived"}
    assert (await http.post("/v1/short/embeddings", json=body)).headers["x-cache"] == "MISS"
    assert (await http.post("/v1/short/embeddings", json=body)).headers["x-cache"] == "HIT"
    await asyncio.sleep(0.7)
    expired = await http.post("/v1/short/embeddings", json=body)
    assert expired.headers["x-cache"] == "MISS" and expired.json()["object"] == "list"
    assert gateway.fake.embed_inputs == ["short lived", "short lived"]


async def test_single_flight(gateway: Gateway, oll: ollama.AsyncClient) -> None:
    gateway.fake.embed_delay_s = 0.3
    answers = await asyncio.gather(
        *(oll.embed(model="nomic-embed-text", input=["shared", f"own {i % 2}"]) for i in range(8))
    )
    # 8 requests, 3 distinct texts: each embedded once, whoever asked first.
    assert sorted(gateway.fake.embed_inputs) == ["own 0", "own 1", "shared"]
    assert all(a.embeddings[0] == answers[0].embeddings[0] for a in answers)


async def test_bypass_headers(
    gateway: Gateway, http: httpx.AsyncClient, redis_url: str, redis_prefix: str
) -> None:
    body = {"model": "nomic-embed-text", "input": "fresh"}
    await http.post("/api/embed", json=body)
    fresh = await http.post("/api/embed", json=body, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS" and len(gateway.fake.embed_inputs) == 2
    unstored = {"model": "nomic-embed-text", "input": "never kept"}
    for _ in range(2):
        answer = await http.post("/api/embed", json=unstored, headers={"Cache-Control": "no-store"})
        assert answer.headers["x-cache"] == "MISS"
    assert gateway.fake.embed_inputs == ["fresh", "fresh", "never kept", "never kept"]
    # no-cache still stored its answer; no-store left no entry.
    assert (await http.post("/api/embed", json=body)).headers["x-cache"] == "HIT"
    client = redis_sync.Redis.from_url(redis_url)
    assert len(list(client.scan_iter(match=redis_prefix + "embeddings:*"))) == 1
    client.close()


async def test_corrupted_entries_are_never_served(
    gateway: Gateway, http: httpx.AsyncClient, redis_url: str, redis_prefix: str
) -> None:
    good = (await http.post("/api/embed", json={"model": "nomic-embed-text", "input": "victim"})).json()
    await http.post("/api/embed", json={"model": "nomic-embed-text", "input": "donor"})
    client = redis_sync.Redis.from_url(redis_url)
    victim, donor = (_key_of(client, redis_prefix, text) for text in ("victim", "donor"))
    entry = client.get(victim)
    assert isinstance(entry, bytes)
    spoiled = [
        b"garbage",
        entry[:-4],  # cut short
        entry[:-1] + bytes([entry[-1] ^ 1]),  # one bit flipped in the payload
        client.get(donor),  # a valid entry, but another key's
    ]
    for number, value in enumerate(spoiled, start=1):
        client.set(victim, value)  # type: ignore[arg-type]
        answer = await http.post("/api/embed", json={"model": "nomic-embed-text", "input": "victim"})
        assert answer.headers["x-cache"] == "MISS"
        assert answer.json()["embeddings"] == good["embeddings"]
        assert gateway.fake.embed_inputs.count("victim") == 1 + number
    # The answer fetched again replaced the spoiled entry.
    assert client.get(victim) == entry
    client.close()
    metrics = (await http.get("/metrics")).text
    assert 'citadel_cache_errors_total{cache="embeddings"} 4.0' in metrics


async def test_needs_the_embeddings_scope(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        refused = await client.post("/api/embed", json={"model": "nomic-embed-text", "input": "x"})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert gateway.fake.embed_inputs == []


async def test_bad_requests(gateway: Gateway, http: httpx.AsyncClient) -> None:
    empty = await http.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
    tokens = await http.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": [[1, 2]]})
    assert tokens.status_code == 400
    unknown = await http.post("/api/embed", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404
    load_only = await http.post("/api/embed", json={"model": "nomic-embed-text"})
    assert load_only.status_code == 200 and load_only.json()["embeddings"] == []
    assert gateway.fake.embed_inputs == []


def _key_of(client: redis_sync.Redis, prefix: str, text: str) -> str:
    key = embedding_key(
        "embeddings:",
        normalize=True,
        model=EMBED_MODEL,
        text=text,
        truncate=None,
        dimensions=None,
        options=None,
    )
    return prefix + key.name
