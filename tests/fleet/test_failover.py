"""Failover and breakers: a backend that dies or fails before answering is replaced by the next one;
a stream that already started ends with the error event; a failing backend's breaker opens and recovers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.core.conftest import AUTH
from tests.fakes.ollama import Behavior, FakeOllama
from tests.fleet.conftest import (
    CHAT_PATH,
    backends_report,
    chat,
    eventually,
    fleet_gateway,
    post,
    write_fleet_config,
)

BACKEND = "x-citadel-backend"


async def _stream_first_chunk(
    session: aiohttp.ClientSession, url: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    response = await session.post(url + CHAT_PATH, json=chat("phi3", stream=True))
    assert response.status == 200
    return response, await response.content.readany()


async def test_a_dead_backend_is_replaced_unless_its_stream_started(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    gpu_a = fakes["gpu-a"]  # phi3 is loaded there: every phi3 request goes there first
    gpu_a.behavior = Behavior(first_token_delay_s=30)  # still loading: nothing sent yet
    gpu_a.next(Behavior(tokens=["tok"] * 200, token_delay_s=0.05))  # the first one streams
    async with (
        fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw,
        aiohttp.ClientSession(headers=AUTH) as session,
    ):
        started, first = await _stream_first_chunk(session, gw.url)
        assert started.headers[BACKEND] == "gpu-a" and b"tok" in first

        async def waiting_stream() -> tuple[int, str, bytes]:
            async with session.post(gw.url + CHAT_PATH, json=chat("phi3", stream=True)) as response:
                return response.status, response.headers.get(BACKEND, ""), await response.read()

        pending: list[asyncio.Task[Any]] = [
            asyncio.create_task(post(gw.url, chat("phi3"))),
            asyncio.create_task(post(gw.url, chat("phi3"))),
            asyncio.create_task(waiting_stream()),
        ]
        await gpu_a.wait_streams(4)
        await gpu_a.close()  # the server dies while three requests wait for their first token
        rest = (await started.content.read()).decode()
        started.release()
        results = await asyncio.gather(*pending)
    assert "error" in rest and "[DONE]" not in rest.split("error", 1)[0]
    for status, headers, body in results[:2]:
        assert status == 200, body
        assert headers[BACKEND] in ("gpu-b", "gpu-c")
    # The waiting stream's headers went out while it waited (header_grace_ms): no backend header then.
    status, _backend, body = results[2]
    assert status == 200
    assert b"[DONE]" in body and b"error" not in body
    assert fakes["gpu-b"].count("/api/chat") + fakes["gpu-c"].count("/api/chat") == 3


async def test_breaker_opens_after_failures_and_recovers(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    gpu_a = fakes["gpu-a"]
    gpu_a.behavior = Behavior(error_status=500)
    config = write_fleet_config(tmp_path, fakes, fleet={"breaker_cooldown_s": 1.0})
    async with fleet_gateway(config, fakes) as gw:
        for _ in range(2):  # breaker_failures: 2
            status, headers, _ = await post(gw.url, chat("phi3"))
            assert status == 200 and headers[BACKEND] != "gpu-a"  # failed over
        report = {b["name"]: b for b in await backends_report(gw.url)}
        assert report["gpu-a"]["breaker"] == "open"
        assert "500" in report["gpu-a"]["last_error"]
        tried = gpu_a.count("/api/chat")
        status, headers, _ = await post(gw.url, chat("phi3"))
        assert status == 200 and headers[BACKEND] != "gpu-a"
        assert gpu_a.count("/api/chat") == tried  # open: not even tried
        gpu_a.behavior = Behavior()
        await eventually(lambda: _breaker_is(gw.url, "gpu-a", "closed"))  # the probe after the cooldown
        status, headers, _ = await post(gw.url, chat("phi3"))
        assert (status, headers[BACKEND]) == (200, "gpu-a")
        async with aiohttp.ClientSession() as session, session.get(gw.url + "/metrics") as response:
            metrics = await response.text()
    assert 'citadel_backend_failovers_total{backend="gpu-a"} 2.0' in metrics
    assert 'citadel_backend_breaker_transitions_total{backend="gpu-a",state="open"} 1.0' in metrics
    assert 'citadel_backend_breaker_transitions_total{backend="gpu-a",state="closed"} 1.0' in metrics
    assert 'citadel_backend_requests_total{backend="gpu-a",outcome="failed"} 2.0' in metrics


async def test_only_unhealthy_backends_give_503_with_retry_after(
    fakes: dict[str, FakeOllama], tmp_path: Path
) -> None:
    config = write_fleet_config(tmp_path, fakes, fleet={"breaker_cooldown_s": 30.0, "retry_after_s": 7})
    async with fleet_gateway(config, fakes) as gw:
        await fakes["gpu-b"].close()  # mixtral lives on gpu-b only
        statuses = [(await post(gw.url, chat("mixtral")))[0] for _ in range(2)]
        assert statuses == [502, 502]  # nothing else has it: the connect failure is the answer
        status, headers, body = await post(gw.url, chat("mixtral"))
        assert status == 503 and headers["retry-after"] == "7"
        assert b"backends_unavailable" in body


async def _breaker_is(url: str, backend: str, state: str) -> bool:
    return {b["name"]: b for b in await backends_report(url)}[backend]["breaker"] == state


async def test_silence_before_the_first_token_moves_on(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    fakes["gpu-a"].behavior = Behavior(first_token_delay_s=30)  # phi3 is loaded there; it never answers
    config = write_fleet_config(tmp_path, fakes)
    config.write_text(config.read_text().replace("connect_timeout_s: 2", "connect_timeout_s: 2, timeout: 1"))
    async with fleet_gateway(config, fakes) as gw:
        status, headers, body = await post(gw.url, chat("phi3"))
        assert status == 200, body
        assert headers[BACKEND] in ("gpu-b", "gpu-c")
        report = {b["name"]: b for b in await backends_report(gw.url)}
        assert "sent nothing for 1 s" in report["gpu-a"]["last_error"]
