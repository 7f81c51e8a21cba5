"""Management across the backends: the backends report, the merged model list, pull and delete per
backend, ollama-status and /health over every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.core.conftest import AUTH
from tests.fakes.ollama import FakeOllama
from tests.fleet.conftest import backends_report, fleet_gateway, write_fleet_config

# A long interval: what the tests see after pull and delete is the gateway's own refresh, not the loop's.
SLOW_INVENTORY = {"inventory_interval_s": 600}


async def _call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.request(method, url + path, json=body) as response,
    ):
        raw = await response.read()
        if response.content_type == "application/x-ndjson":
            return response.status, [json.loads(line) for line in raw.splitlines() if line]
        return response.status, await response.json(content_type=None)


async def test_backends_report_health_load_and_models(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    config = write_fleet_config(tmp_path, fakes, per_backend={"gpu-b": {"max_concurrent": 2, "weight": 3}})
    async with fleet_gateway(config, fakes) as gw:
        report = {b["name"]: b for b in await backends_report(gw.url)}
    assert set(report) == {"gpu-a", "gpu-b", "gpu-c"}
    gpu_b = report["gpu-b"]
    assert gpu_b["url"] == fakes["gpu-b"].url
    assert (gpu_b["healthy"], gpu_b["breaker"], gpu_b["in_flight"]) == (True, "closed", 0)
    assert (gpu_b["max_concurrent"], gpu_b["weight"]) == (2, 3)
    assert gpu_b["installed"] == ["mixtral:latest", "phi3:latest"]
    assert [m["name"] for m in gpu_b["loaded"]] == ["mixtral:latest"]
    assert gpu_b["latency_ms"] is not None and gpu_b["last_error"] is None


async def test_model_list_says_where_each_model_is(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    async with fleet_gateway(write_fleet_config(tmp_path, fakes), fakes) as gw:
        await fakes["gpu-c"].close()
        status, body = await _call(gw.url, "GET", "/management/models/list")
    assert status == 200
    where = {m["name"]: m["backends"] for m in body["models"]}
    assert where == {
        "phi3:latest": ["gpu-a", "gpu-b"],
        "qwen3:latest": ["gpu-a"],
        "mixtral:latest": ["gpu-b"],
    }
    assert set(body["backend_errors"]) == {"gpu-c"}


async def test_delete_on_one_backend_and_pull_on_all(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    config = write_fleet_config(tmp_path, fakes, fleet=SLOW_INVENTORY)
    async with fleet_gateway(config, fakes) as gw:
        status, body = await _call(
            gw.url, "POST", "/management/models/delete", {"model": "phi3", "backend": "gpu-c"}
        )
        assert (status, body["backends"]) == (200, ["gpu-c"])
        assert "phi3:latest" not in fakes["gpu-c"].models and "phi3:latest" in fakes["gpu-a"].models
        report = {b["name"]: b for b in await backends_report(gw.url)}
        assert "phi3:latest" not in report["gpu-c"]["installed"]  # read again at once

        status, body = await _call(
            gw.url, "POST", "/management/models/delete", {"model": "phi3", "backend": "gpu-x"}
        )
        assert status == 404 and body["error"]["code"] == "backend_not_found"

        status, events = await _call(gw.url, "POST", "/management/models/pull", {"model": "tinyllama"})
        assert status == 200
        done = {e["backend"] for e in events if e["status"] == "success"}
        assert done == {"gpu-a", "gpu-b", "gpu-c"}
        report = {b["name"]: b for b in await backends_report(gw.url)}
        assert all("tinyllama:latest" in b["installed"] for b in report.values())


async def test_status_and_health_cover_every_backend(fakes: dict[str, FakeOllama], tmp_path: Path) -> None:
    # Each /health below must probe afresh: no result is reused past a millisecond.
    top = "monitoring: {health_checks: {max_age_s: 0.001}}"
    async with fleet_gateway(write_fleet_config(tmp_path, fakes, top=top), fakes) as gw:
        await fakes["gpu-a"].close()
        status, body = await _call(gw.url, "GET", "/management/system/ollama-status")
        assert status == 200 and body["reachable"] is True
        assert {n: b["reachable"] for n, b in body["backends"].items()} == {
            "gpu-a": False,
            "gpu-b": True,
            "gpu-c": True,
        }
        status, body = await _call(gw.url, "GET", "/health")
        assert status == 200 and body["checks"]["ollama"]["status"] == "ok"
        assert "gpu-a" in body["checks"]["ollama"]["detail"]
        await fakes["gpu-b"].close()
        await fakes["gpu-c"].close()
        status, body = await _call(gw.url, "GET", "/health")
        assert status == 503 and body["checks"]["ollama"]["status"] == "down"
