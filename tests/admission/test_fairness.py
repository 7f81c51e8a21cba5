"""Fairness between keys: keys of one class take turns in the queue, and a key may have at most
`max_in_flight_per_key` requests in flight."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from citadel_proxy.auth.keys import generate_key, hash_key
from tests.admission.conftest import GUI, HOLD, ask, started_order, until_running, until_waiting
from tests.core.conftest import TEST_KEY
from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import fleet_gateway, write_fleet_config

OTHER_KEY = generate_key()
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


def two_keys(tmp_path: Path, fakes: dict[str, FakeOllama], fleet: dict[str, Any] | None = None) -> Path:
    fakes["gpu-b"].behavior = HOLD
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 1}}, fleet=fleet)
    mine = f"sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference, embeddings, admin]}}"
    other = f"\n    - {{name: other, sha256: {hash_key(OTHER_KEY).hex()}, scopes: [inference]}}"
    config.write_text(config.read_text().replace(mine, mine + other))
    return config


async def ask_as(url: str, headers: dict[str, str], tag: str) -> tuple[int, dict[str, str], bytes, float]:
    body = {"model": "mixtral", "messages": [{"role": "user", "content": tag}], "stream": False}
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as session, session.post(url + GUI, json=body) as r:
        data = await r.read()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, data, time.perf_counter() - started


async def test_keys_of_one_class_take_turns(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    gpu_b = fakes["gpu-b"]
    async with fleet_gateway(two_keys(tmp_path, fakes), fakes) as gw:
        first = asyncio.create_task(ask(gw.url, GUI, "batch-first"))
        await until_running(gpu_b)
        batch = [asyncio.create_task(ask(gw.url, GUI, f"batch-{i}")) for i in range(10)]
        await until_waiting(gw.url, "gui", 10)
        other = await ask_as(gw.url, OTHER, "other")
        await asyncio.gather(first, *batch)
    assert other[0] == 200, other[2]
    order = started_order(gpu_b)
    # Without turns it would start after the whole batch (12th); with them, after a couple of it.
    assert order.index("other") <= 3, order


async def test_a_key_past_its_in_flight_limit_is_refused(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    config = two_keys(tmp_path, fakes, fleet={"max_in_flight_per_key": 2})
    async with fleet_gateway(config, fakes) as gw:
        held = [asyncio.create_task(ask(gw.url, GUI, f"held-{i}")) for i in range(2)]
        await until_running(fakes["gpu-b"])
        await until_waiting(gw.url, "gui", 1)
        status, headers, body, _ = await ask(gw.url, GUI, "third")
        other = await ask_as(gw.url, OTHER, "other")
        assert all(r[0] == 200 for r in await asyncio.gather(*held))
    assert status == 429 and headers["retry-after"] == "2"
    assert json.loads(body)["error"]["code"] == "too_many_in_flight"
    assert other[0] == 200  # another key is not held back
