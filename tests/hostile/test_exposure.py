"""What the gateway shows to whom: its bind address, /metrics, /health, and the registry hosts that model
management may make Ollama contact."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from citadel_proxy.auth.keys import generate_key, hash_key
from citadel_proxy.config import load_config
from citadel_proxy.config.schema import Gateway as GatewaySettings
from tests.core.conftest import AUTH, REPO, Gateway, free_port, running_gateway, write_config
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
    # The README's first lines tell a newcomer where `make run` listens.
    make_run = next(
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("make run")
    )
    assert f"{shipped.host}:{shipped.port}" in make_run, make_run


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


INFERENCE_KEY = generate_key()
READER = {"Authorization": f"Bearer {INFERENCE_KEY}"}


@pytest.fixture
async def gateway(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[Gateway]:
    reader = f"    - {{name: reader, sha256: {hash_key(INFERENCE_KEY).hex()}, scopes: [inference]}}"
    config = write_config(tmp_path, fake.port, REPO / "pipelines", extra_keys=reader)
    config = with_registries(config, ["registry.example.com"])
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


# --- /health: status per component for everyone, details for an admin key ---------------------------


async def health_of(gw: Gateway, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + "/health", headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_public_health_shows_no_hosts_ports_or_errors(tmp_path: Path) -> None:
    # Redis on a closed port and Ollama gone: both failures name their host and port in the details.
    redis_port, ollama_port = free_port(), free_port()
    config = write_config(tmp_path, ollama_port, REPO / "pipelines", extra=f"redis: {{port: {redis_port}}}")
    async with FakeOllama() as fake, running_gateway(config, fake) as gw:
        status, public = await health_of(gw)
        admin_status, detailed = await health_of(gw, AUTH)
    assert status == admin_status == 503
    assert public == {
        "status": "unavailable",
        "checks": {"ollama": {"status": "down"}, "redis": {"status": "down"}, "audit": {"status": "ok"}},
    }
    shown = str(detailed["checks"])
    assert str(redis_port) in shown and str(ollama_port) in shown
    assert all("detail" in check for check in detailed["checks"].values())


async def test_health_details_need_the_admin_scope(gateway: Gateway) -> None:
    status, detailed = await health_of(gateway, AUTH)
    assert status == 200 and "latency_ms" in detailed["checks"]["ollama"]
    for headers in (None, READER):
        status, public = await health_of(gateway, headers)
        assert status == 200 and public["checks"]["ollama"] == {"status": "ok"}
    status, refused = await health_of(gateway, {"Authorization": "Bearer cit_not-a-key-at-all-000000"})
    assert status == 401 and refused["error"]["type"] == "authentication_error"


# --- /metrics: off, on for listed networks, or with a `metrics` key ---------------------------------

METRICS_KEY = generate_key()
SCRAPER = {"Authorization": f"Bearer {METRICS_KEY}"}
INSIDE, OUTSIDE = "10.1.2.3", "203.0.113.5"


@contextlib.asynccontextmanager
async def metrics_gateway(tmp_path: Path, fake: FakeOllama, prometheus: str) -> AsyncIterator[Gateway]:
    keys = "\n".join(
        f"    - {{name: {name}, sha256: {hash_key(key).hex()}, scopes: [{scope}]}}"
        for name, key, scope in (("reader", INFERENCE_KEY, "inference"), ("scraper", METRICS_KEY, "metrics"))
    )
    extra = f"monitoring:\n  prometheus: {prometheus}"
    config = write_config(tmp_path, fake.port, REPO / "pipelines", extra=extra, extra_keys=keys)
    async with running_gateway(config, fake) as gw:
        yield gw


async def metrics_status(
    gw: Gateway, client: str | None = None, headers: dict[str, str] | None = None
) -> int:
    """The status of GET /metrics; `client` is the address nginx (a trusted proxy) names."""
    sent = {**(headers or {}), **({"X-Forwarded-For": client} if client else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + "/metrics", headers=sent) as response,
    ):
        if response.status == 200:
            assert b"citadel_requests_total" in await response.read()
        return response.status


async def test_metrics_can_be_switched_off(tmp_path: Path, fake: FakeOllama) -> None:
    async with metrics_gateway(tmp_path, fake, "{enabled: false}") as gw:
        assert await metrics_status(gw) == 404
        assert await metrics_status(gw, headers=AUTH) == 404


async def test_metrics_by_default_loopback_or_a_metrics_key(tmp_path: Path, fake: FakeOllama) -> None:
    async with metrics_gateway(tmp_path, fake, "{}") as gw:
        assert await metrics_status(gw) == 200
        assert await metrics_status(gw, OUTSIDE) == 401
        assert await metrics_status(gw, OUTSIDE, READER) == 403
        assert await metrics_status(gw, OUTSIDE, SCRAPER) == 200
        assert await metrics_status(gw, OUTSIDE, AUTH) == 200  # admin


async def test_metrics_for_listed_networks_only(tmp_path: Path, fake: FakeOllama) -> None:
    async with metrics_gateway(tmp_path, fake, "{allow: [10.0.0.0/8], allow_keys: false}") as gw:
        assert await metrics_status(gw, INSIDE) == 200
        async with aiohttp.ClientSession() as session:
            for client in (OUTSIDE, None):  # None: 127.0.0.1 itself, not listed here
                headers = {**SCRAPER, **({"X-Forwarded-For": client} if client else {})}
                async with session.get(gw.url + "/metrics", headers=headers) as response:
                    assert response.status == 403
                    assert (await response.json())["error"]["code"] == "forbidden_network"
