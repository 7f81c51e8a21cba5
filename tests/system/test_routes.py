"""The two endpoints over HTTP, with the services they read from `request.state.services`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from citadel_proxy.config.schema import Config, Paths
from citadel_proxy.routes.system import resources, storage
from citadel_proxy.system.gpu import GpuProbe
from citadel_proxy.system.resources import Resources, ResourceSampler
from citadel_proxy.system.storage import StorageUsage
from tests.system.fake_nvml import FakeNvml


def client_for(services: Any) -> TestClient:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"services": services}

    app = Starlette(
        routes=[
            Route("/management/system/resources", resources),
            Route("/management/system/storage-usage", storage),
        ],
        lifespan=lifespan,
    )
    return TestClient(app)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[SimpleNamespace]:
    paths = Paths(data=str(tmp_path / "data"), logs=str(tmp_path / "log"), backups=str(tmp_path / "backups"))
    probe = GpuProbe(FakeNvml())
    yield SimpleNamespace(config=Config(paths=paths), resource_sampler=ResourceSampler(), gpu_probe=probe)
    probe.close()


@pytest.mark.parametrize("nvml", [FakeNvml(), None], ids=["with-nvml", "this-machine"])
def test_resources_endpoint(services: SimpleNamespace, nvml: FakeNvml | None) -> None:
    services.gpu_probe = GpuProbe(nvml)
    with client_for(services) as client:
        response = client.get("/management/system/resources")
    services.gpu_probe.close()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    report = msgspec.json.decode(response.content, type=Resources, strict=True)
    body = response.json()
    # The specification's monitoring scripts read these three.
    assert body["cpu_percent"] == report.cpu.percent
    assert "percent" in body["memory"]
    assert "disk_root" in body
    if nvml is not None:
        assert report.gpu_status == "ok"
        assert body["gpus"][0]["power_draw_w"] == 123.46
    elif report.gpu_status != "ok":
        assert report.gpus == []


def test_storage_endpoint(services: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    (models / "blobs" / "sha256-1").write_bytes(b"x" * 42)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    with client_for(services) as client:
        response = client.get("/management/system/storage-usage")
    assert response.status_code == 200
    usage = msgspec.json.decode(response.content, type=StorageUsage, strict=True)
    assert (usage.models.path, usage.models_source) == (str(models), "OLLAMA_MODELS")
    assert (usage.models.size_bytes, usage.models.files) == (42, 1)
    assert usage.data.status == "ok"
    assert usage.logs.status == "missing"
    assert usage.models.filesystem is not None
