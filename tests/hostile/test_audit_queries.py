"""Hostile query strings on the audit management API: refused as 400, never a 503 from PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import GatewayError
from citadel_proxy.http.responses import on_gateway_error
from citadel_proxy.routes.audit import routes
from tests.audit.conftest import migrated  # noqa: F401  (fixture)


@pytest.fixture
def http(migrated: Config, tmp_path: Path) -> Iterator[TestClient]:  # noqa: F811
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            sink = await open_audit(migrated, stack, AuditOptions(spool_dir=str(tmp_path / "spool")))
            yield {"services": SimpleNamespace(audit=sink)}

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={GatewayError: on_gateway_error})
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("param", ["key", "model", "cursor", "since", "until"])
def test_nul_in_a_filter_is_a_400(http: TestClient, param: str) -> None:
    response = http.get(f"/management/audit/conversations?{param}=a%00b")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_nul_in_stats_window_is_a_400(http: TestClient) -> None:
    response = http.get("/management/audit/stats?since=%00")
    assert response.status_code == 400 and response.json()["error"]["param"] == "since"


def test_nul_in_a_conversation_id_is_not_found(http: TestClient) -> None:
    assert http.get("/management/audit/conversations/a%00b").status_code == 404
