"""What the gateway shows to whom: its bind address, /metrics, /health, and the registry hosts that model
management may make Ollama contact."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from citadel_proxy.config import load_config
from citadel_proxy.config.schema import Gateway as GatewaySettings
from tests.core.conftest import AUTH, REPO, Gateway, running_gateway, write_config
from tests.fakes.ollama import FakeOllama

# --- Bind address ------------------------------------------------------------------------------------


def test_the_gateway_binds_loopback_by_default_and_as_shipped() -> None:
    shipped = load_config(REPO / "conf" / "citadel.yaml").gateway
    assert GatewaySettings().host == "127.0.0.1"
    assert shipped.host == "127.0.0.1"
    # nginx and systemd reach the gateway where the shipped config puts it.
    upstream = re.search(r"server (\S+);", (REPO / "nginx" / "citadel-proxy.conf").read_text())
    assert upstream is not None and upstream.group(1) == f"{shipped.host}:{shipped.port}"
    assert "127.0.0.1:8002" in (REPO / "systemd" / "citadel-proxy.service").read_text()


# --- Registry hosts in model names (server-side request forgery through Ollama) ----------------------

SSRF_NAMES = [
    "127.0.0.1:6379/ns/model",
    "169.254.169.254/latest/meta-data",
    "localhost:11434/library/phi3",
    "Registry.Example.com.evil.net/team/model:v1",
]


def with_registries(config: Path, registries: list[str]) -> Path:
    """The test config with `ollama.registries` set (the `ollama:` block ends before `model_routing:`)."""
    text = config.read_text()
    config.write_text(text.replace("model_routing:", f"  registries: {registries}\nmodel_routing:", 1))
    return config


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(pull_step_delay_s=0.01) as server:
        yield server


@pytest.fixture
async def gateway(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = with_registries(write_config(tmp_path, fake.port, REPO / "pipelines"), ["registry.example.com"])
    async with running_gateway(config, fake) as gw:
        yield gw


async def admin_call(gw: Gateway, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(gw.url, headers=AUTH) as session,
        session.request(method, path, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("name", SSRF_NAMES)
async def test_registry_hosts_not_listed_are_refused_before_ollama(
    gateway: Gateway, fake: FakeOllama, name: str
) -> None:
    status, body = await admin_call(gateway, "GET", f"/management/models/{name}/info")
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == ("name", "registry_not_allowed")
    for path in ("/management/models/pull", "/management/models/delete"):
        status, body = await admin_call(gateway, "POST", path, json={"model": name})
        assert status == 400, body
        assert (body["error"]["param"], body["error"]["code"]) == ("model", "registry_not_allowed")
    assert fake.count("/api/show") == fake.count("/api/pull") == fake.count("/api/delete") == 0


async def test_ollamas_registry_and_listed_registries_are_forwarded(
    gateway: Gateway, fake: FakeOllama
) -> None:
    for name in ("registry.ollama.ai/library/phi3", "REGISTRY.example.com/team/model:v1"):
        async with (
            aiohttp.ClientSession(gateway.url, headers=AUTH) as session,
            session.post("/management/models/pull", json={"model": name}) as response,
        ):
            assert response.status == 200
            await response.read()
    assert [pull.model for pull in fake.pulls] == [
        "registry.ollama.ai/library/phi3",
        "REGISTRY.example.com/team/model:v1",
    ]
