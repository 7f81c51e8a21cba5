"""The model and ollama-status endpoints through a real gateway in front of the fake Ollama."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.core.conftest import AUTH, Gateway
from tests.fakes.ollama import VERSION, FakeOllama
from tests.management.conftest import READER

Admin = Callable[..., Any]

MANAGEMENT_ROUTES = [
    ("GET", "/management/models/list", None),
    ("POST", "/management/models/pull", {"model": "tinyllama"}),
    ("POST", "/management/models/delete", {"model": "phi3"}),
    ("GET", "/management/models/phi3/info", None),
    ("GET", "/management/models/configured", None),
    ("GET", "/management/models/running", None),
    ("GET", "/management/system/ollama-status", None),
]


async def test_list_marks_configured_models_and_their_aliases(admin: Admin) -> None:
    status, body = await admin("GET", "/management/models/list")
    assert status == 200
    by_name = {m["name"]: m for m in body["models"]}
    assert body["count"] == len(by_name) == 5
    assert by_name["phi3:latest"]["configured"] is True
    assert by_name["phi3:latest"]["active"] is True
    assert by_name["phi3:latest"]["aliases"] == ["phi3"]
    assert by_name["codellama:code"]["aliases"] == ["coder"]
    assert by_name["openchat:latest"]["configured"] is False
    assert by_name["openchat:latest"]["active"] is None
    assert by_name["phi3:latest"]["details"]["quantization_level"] == "Q4_K_M"
    assert len(by_name["phi3:latest"]["digest"]) == 64


async def test_configured_says_which_models_ollama_has(admin: Admin) -> None:
    status, body = await admin("GET", "/management/models/configured")
    assert status == 200
    present = {m["name"]: m["present"] for m in body["models"]}
    assert present == {
        "phi3:latest": True,
        "qwen3:latest": True,
        "codellama:code": True,
        "configured-not-pulled:latest": False,
    }
    assert {a["alias"]: (a["target"], a["present"]) for a in body["aliases"]} == {
        "phi3": ("phi3:latest", True),
        "coder": ("codellama:code", True),
    }
    assert all(m["active"] is True for m in body["models"])
    assert body["ollama_error"] is None


async def test_configured_with_ollama_down_still_lists_the_yaml(admin: Admin, fake: FakeOllama) -> None:
    await fake.close()
    status, body = await admin("GET", "/management/models/configured")
    assert status == 200
    assert [m["present"] for m in body["models"]] == [None] * 4
    assert "cannot connect to Ollama" in body["ollama_error"]


async def test_running_lists_loaded_models(admin: Admin, fake: FakeOllama) -> None:
    status, body = await admin("GET", "/management/models/running")
    assert (status, body) == (200, {"models": [], "count": 0})
    fake.loaded["phi3:latest"] = datetime.now(UTC) + timedelta(minutes=5)
    status, body = await admin("GET", "/management/models/running")
    assert status == 200
    [model] = body["models"]
    assert (model["name"], model["processor"], model["context_length"]) == ("phi3:latest", "100% GPU", 4096)
    assert model["expires_at"]


@pytest.mark.parametrize(
    "name", ["phi3", "phi3:latest", "library/phi3", "registry.ollama.ai/library/phi3:latest"]
)
async def test_info_gives_context_length(admin: Admin, name: str) -> None:
    status, body = await admin("GET", f"/management/models/{name}/info")
    assert status == 200, body
    assert body["name"] == name
    assert (body["architecture"], body["context_length"]) == ("phi3", 4096)
    assert body["parameter_count"] == 3_800_000_000
    assert body["capabilities"] == ["completion"]
    assert body["details"]["family"] == "phi3"


async def test_info_of_unknown_model_is_404(admin: Admin) -> None:
    status, body = await admin("GET", "/management/models/nope:7b/info")
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert "'nope:7b' is not installed" in body["error"]["message"]


@pytest.mark.parametrize(
    "name",
    ["bad%20name", "a..b", "-x", "x:y:z", "a/b/c/d", "x%3Bls", "%C3%A9t%C3%A9", "x" * 600, ".hidden", "a/:b"],
)
async def test_invalid_names_are_refused_before_ollama(admin: Admin, fake: FakeOllama, name: str) -> None:
    status, body = await admin("GET", f"/management/models/{name}/info")
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "name"
    for path in ("/management/models/pull", "/management/models/delete"):
        status, body = await admin("POST", path, json={"model": name.replace("%20", " ")})
        assert status == 400, body
        assert body["error"]["param"] == "model"
    assert fake.count("/api/show") == fake.count("/api/pull") == fake.count("/api/delete") == 0


async def test_delete(admin: Admin, fake: FakeOllama) -> None:
    status, body = await admin("POST", "/management/models/delete", json={"model": "openchat"})
    assert (status, body) == (200, {"model": "openchat", "deleted": True})
    assert "openchat:latest" not in fake.models
    assert fake.requests[-1].method == "DELETE"
    assert fake.requests[-1].json == {"model": "openchat"}
    status, body = await admin("POST", "/management/models/delete", json={"model": "openchat"})
    assert status == 404
    assert body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("payload", [b"", b"{", b"{}", b'{"model": 3}', b'{"model": "phi3", "force": true}'])
async def test_bad_bodies_are_400(admin: Admin, payload: bytes) -> None:
    status, body = await admin(
        "POST", "/management/models/delete", data=payload, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"


async def test_ollama_status(admin: Admin, fake: FakeOllama, gateway: Gateway) -> None:
    fake.loaded["qwen3:latest"] = datetime.now(UTC) + timedelta(minutes=5)
    status, body = await admin("GET", "/management/system/ollama-status")
    assert status == 200
    assert body["reachable"] is True
    assert body["version"] == VERSION
    assert body["base_url"] == fake.url
    assert body["latency_ms"] >= 0
    assert [m["name"] for m in body["loaded_models"]] == ["qwen3:latest"]
    assert body["error"] is None


async def test_ollama_down(admin: Admin, fake: FakeOllama) -> None:
    await fake.close()
    status, body = await admin("GET", "/management/system/ollama-status")
    assert status == 200
    assert body["reachable"] is False
    assert body["version"] is None and body["latency_ms"] is None
    assert "cannot connect to Ollama" in body["error"]
    for path in ("/management/models/list", "/management/models/running", "/management/models/phi3/info"):
        status, body = await admin("GET", path)
        assert status == 502, path
        assert body["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize(("method", "path", "payload"), MANAGEMENT_ROUTES)
async def test_admin_scope_is_required(
    gateway: Gateway, fake: FakeOllama, method: str, path: str, payload: Any
) -> None:
    async with aiohttp.ClientSession(gateway.url) as session:
        async with session.request(method, path, json=payload, headers=READER) as response:
            assert response.status == 403
            assert (await response.json())["error"]["type"] == "permission_error"
        async with session.request(method, path, json=payload) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert (await response.json())["error"]["type"] == "authentication_error"
        async with session.request(
            method, path, json=payload, headers={"X-API-Key": "cit_wrong"}
        ) as response:
            assert response.status == 401
    # Refused before anything reached Ollama.
    assert [r.path for r in fake.requests if r.path != "/api/version"] == []
    assert "phi3:latest" in fake.models


async def test_admin_key_via_x_api_key(gateway: Gateway) -> None:
    key = AUTH["Authorization"].removeprefix("Bearer ")
    async with (
        aiohttp.ClientSession(gateway.url) as session,
        session.get("/management/models/running", headers={"X-API-Key": key}) as response,
    ):
        assert response.status == 200
