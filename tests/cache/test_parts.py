"""The cache's parts on their own: entry codec, in-process LRU, breaker, single flight, directives, checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
import pytest

from citadel_proxy.cache.backend import CacheError, CacheUnavailable
from citadel_proxy.cache.breaker import Breaker
from citadel_proxy.cache.codec import (
    Vector,
    decode_completion,
    decode_vector,
    encode_completion,
    encode_vector,
    pack,
)
from citadel_proxy.cache.control import Directives
from citadel_proxy.cache.flight import SingleFlight
from citadel_proxy.cache.memory import MemoryBackend
from citadel_proxy.config import ConfigError
from citadel_proxy.pipeline.spec import load_pipelines
from citadel_proxy.pipeline.types import Completion, ToolCall, ToolFunction
from citadel_proxy.stages.registry import stage_types
from tests.cache.conftest import write_cache_config
from tests.core.conftest import AUTH, running_gateway
from tests.fakes.ollama import FakeOllama

TAG = b"12345678"


def test_vector_round_trip_is_float32() -> None:
    vector = Vector(pack([0.5, -0.25, 0.1]), tokens=7)
    raw = encode_vector(TAG, vector)
    assert len(raw) == 24 + 12
    back = decode_vector(TAG, raw)
    assert back == vector and back.floats()[:2] == [0.5, -0.25]
    assert abs(back.floats()[2] - 0.1) < 1e-7


@pytest.mark.parametrize(
    "spoil",
    [
        lambda raw: raw[:-1],
        lambda raw: raw + b"\x00",
        lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),
        lambda raw: b"CEv2" + raw[4:],
        lambda raw: raw[:4] + b"87654321" + raw[12:],
        lambda raw: b"",
    ],
)
def test_spoiled_vector_entries_are_refused(spoil) -> None:  # type: ignore[no-untyped-def]
    raw = encode_vector(TAG, Vector(pack([1.0, 2.0]), 3))
    assert decode_vector(TAG, spoil(raw)) is None


def test_completion_round_trip_and_kinds_kept_apart() -> None:
    call = ToolCall(ToolFunction("f", msgspec.Raw(b'{"a":1}')))
    completion = Completion(content="hi", tool_calls=[call], prompt_tokens=3, completion_tokens=1)
    raw = encode_completion(TAG, completion)
    back = decode_completion(TAG, raw)
    assert back is not None and back.content == "hi" and back.prompt_tokens == 3
    assert bytes(back.tool_calls[0].function.arguments) == b'{"a":1}'
    assert decode_vector(TAG, raw) is None
    assert decode_completion(TAG, encode_vector(TAG, Vector(pack([1.0])))) is None


async def test_memory_backend_is_bounded_in_bytes_and_expires() -> None:
    lru = MemoryBackend(max_bytes=1000)
    await lru.set_many([("a", b"x" * 300), ("b", b"y" * 300)], ttl_s=60)
    await lru.get_many(["a"])  # a is now the most recently used
    await lru.set_many([("c", b"z" * 300)], ttl_s=60)
    assert await lru.get_many(["a", "b", "c"]) == [b"x" * 300, None, b"z" * 300]
    assert lru.size <= 1000
    await lru.set_many([("huge", b"h" * 2000)], ttl_s=60)
    assert await lru.get_many(["huge"]) == [None]
    await lru.set_many([("brief", b"q")], ttl_s=0.01)
    await asyncio.sleep(0.02)
    assert await lru.get_many(["brief"]) == [None]


class FlakyBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__(10_000)
        self.calls = 0
        self.fail = False
        self.stall_s = 0.0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.calls += 1
        await asyncio.sleep(self.stall_s)
        if self.fail:
            raise CacheError("down")
        return await super().get_many(keys)


async def test_breaker_rests_after_a_failure_then_probes() -> None:
    backend = FlakyBackend()
    breaker = Breaker(backend, call_timeout_s=0.05, cooldown_s=0.2)
    backend.stall_s = 1.0
    with pytest.raises(CacheError):
        await breaker.get_many(["k"])
    backend.stall_s, backend.fail = 0.0, True
    for _ in range(3):
        with pytest.raises(CacheUnavailable):
            await breaker.get_many(["k"])
    assert backend.calls == 1 and breaker.open
    await asyncio.sleep(0.25)
    with pytest.raises(CacheError):
        await breaker.get_many(["k"])  # the probe fails: rest again
    assert backend.calls == 2
    backend.fail = False
    await asyncio.sleep(0.25)
    assert await breaker.get_many(["k"]) == [None]
    assert not breaker.open


async def test_single_flight_followers_get_the_leaders_result() -> None:
    flights = SingleFlight()
    leader = flights.join("k")
    followers = [flights.join("k") for _ in range(3)]
    assert leader.leader and not any(f.leader for f in followers)
    waiting = [asyncio.create_task(f.wait()) for f in followers]
    waiting[0].cancel()  # one follower leaving does not affect the others
    flights.settle(leader, b"entry")
    flights.settle(leader, None)  # again: harmless
    assert await asyncio.gather(*waiting[1:]) == [b"entry", b"entry"]
    assert len(flights) == 0 and flights.join("k").leader


def test_directives() -> None:
    assert Directives.of({}) == Directives(True, True)
    assert Directives.of({"cache-control": "max-age=0, No-Cache"}) == Directives(False, True)
    assert Directives.of({"cache-control": "no-cache, no-store"}) == Directives(False, False)


@pytest.mark.parametrize(
    ("stages", "problem"),
    [
        ("[cache, auth]", "list cache after auth"),
        ("[auth, cache, rate_limit]", "list cache after rate_limit"),
        ("[cache, chunking]", "list cache after chunking"),
    ],
)
def test_cache_must_come_after(tmp_path: Path, stages: str, problem: str) -> None:
    (tmp_path / "p.yaml").write_text(f"format: chat\nstages: {stages}\n")
    with pytest.raises(ConfigError, match=problem):
        load_pipelines(tmp_path, stage_types(), 60.0)


def test_embeddings_pipeline_is_no_agent(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("format: embeddings\nagent: true\nstages: [cache]\n")
    with pytest.raises(ConfigError, match="cannot be an agent"):
        load_pipelines(tmp_path, stage_types(), 60.0)


async def test_in_process_cache_without_redis(tmp_path: Path, cache_pipelines: Path) -> None:
    async with FakeOllama() as fake:
        config = write_cache_config(tmp_path, fake.port, cache_pipelines, "null")
        async with (
            running_gateway(config, fake) as gw,
            httpx.AsyncClient(base_url=gw.url, headers=AUTH) as http,
        ):
            body = {"model": "nomic-embed-text", "input": ["a", "b"]}
            first = await http.post("/api/embed", json=body)
            second = await http.post("/api/embed", json=body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json()["embeddings"] == second.json()["embeddings"]
    assert fake.embed_inputs == ["a", "b"]
