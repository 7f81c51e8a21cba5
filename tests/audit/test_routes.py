"""The management API over a populated audit store, PostgreSQL and SQLite alike: filters, keyset pages,
one conversation, stats."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from citadel_proxy.audit import AuditOptions, new_id, open_audit
from citadel_proxy.audit.records import AuditMessage
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import GatewayError
from citadel_proxy.http.responses import on_gateway_error
from citadel_proxy.routes.audit import routes
from tests.audit.conftest import make_config, record

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def population() -> tuple[list[str], list[Any]]:
    conversations, records = [], []
    for i in range(5):
        conversation = new_id()
        conversations.append(conversation)
        for turn in range(2):
            records.append(
                msgspec.structs.replace(
                    record(i * 10 + turn, conversation),
                    time=T0 + timedelta(minutes=i, seconds=turn),
                    model="phi3:latest" if i % 2 == 0 else "mixtral:latest",
                    key_name="team-a" if i < 3 else "team-b",
                    duration_ms=100.0 * (turn + 1) * (i + 1),
                    ttft_ms=10.0,
                    prompt_tokens=10,
                    completion_tokens=i,
                    status=502 if (i, turn) == (3, 1) else 200,
                    messages=[
                        AuditMessage(role="user", content=f"q{i}.{turn}", bytes=4),
                        AuditMessage(role="assistant", content=f"a{i}.{turn}", bytes=4),
                    ],
                )
            )
    return conversations, records


@contextlib.contextmanager
def serve(config: Config, spool: Path, records: list[Any]) -> Iterator[TestClient]:
    """The audit routes over `config`'s store, holding `records`."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            sink = await open_audit(config, stack, AuditOptions(spool_dir=str(spool)))
            for rec in records:
                await sink.submit(rec)
            await sink.close()  # drained: every record stored before the first query
            yield {"services": SimpleNamespace(audit=sink)}

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={GatewayError: on_gateway_error})
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def client(any_store: Config, tmp_path: Path) -> Iterator[tuple[TestClient, list[str]]]:
    conversations, records = population()
    with serve(any_store, tmp_path / "spool", records) as test_client:
        yield test_client, conversations


def ids(body: dict[str, Any]) -> list[str]:
    return [c["id"] for c in body["data"]]


def test_keyset_pages_cover_everything_once(client: tuple[TestClient, list[str]]) -> None:
    http, conversations = client
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = http.get("/management/audit/conversations", params=params).json()
        seen += ids(body)
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == conversations[::-1]
    first = http.get("/management/audit/conversations", params={"limit": "1"}).json()["data"][0]
    assert first["requests"] == 2 and first["key_name"] == "team-b" and first["model"] == "phi3:latest"


def test_filters(client: tuple[TestClient, list[str]]) -> None:
    http, conversations = client
    get = lambda **p: ids(http.get("/management/audit/conversations", params=p).json())  # noqa: E731
    assert get(model="mixtral:latest") == [conversations[3], conversations[1]]
    assert get(key="team-b") == [conversations[4], conversations[3]]
    since, until = (T0 + timedelta(minutes=1)).isoformat(), (T0 + timedelta(minutes=3)).isoformat()
    assert get(since=since, until=until) == [conversations[2], conversations[1]]
    assert get(key="team-a", model="phi3:latest") == [conversations[2], conversations[0]]
    assert get(key="nobody") == []


def test_one_conversation(client: tuple[TestClient, list[str]]) -> None:
    http, conversations = client
    body = http.get(f"/management/audit/conversations/{conversations[3]}").json()
    assert [m["content"] for m in body["messages"]] == ["q3.0", "a3.0", "q3.1", "a3.1"]
    assert [m["status"] for m in body["messages"]] == [200, 200, 502, 502]
    missing = http.get(f"/management/audit/conversations/{new_id()}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert http.get("/management/audit/conversations/not-a-uuid").status_code == 404


def test_stats(client: tuple[TestClient, list[str]]) -> None:
    http, _ = client
    params = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}
    data = {row["model"]: row for row in http.get("/management/audit/stats", params=params).json()["data"]}
    mixtral, phi3 = data["mixtral:latest"], data["phi3:latest"]
    counts = ("requests", "errors", "prompt_tokens", "completion_tokens")
    assert [mixtral[name] for name in counts] == [4, 1, 40, 8]
    assert (phi3["requests"], phi3["errors"], phi3["completion_tokens"]) == (6, 0, 12)
    # phi3 durations 100, 200, 300, 500, 600, 1000 ms; p95 interpolates 600 + 0.75 * 400
    assert phi3["p50_ms"] == pytest.approx(400.0) and phi3["p95_ms"] == pytest.approx(900.0)
    assert http.get("/management/audit/stats").json()["data"] == []  # default window: the last 24 hours


def test_bad_parameters(client: tuple[TestClient, list[str]]) -> None:
    http, _ = client
    for params, param in [
        ({"limit": "0"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"since": "May"}, "since"),
    ]:
        response = http.get("/management/audit/conversations", params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_both_stores_answer_alike(migrated: Config, tmp_path: Path) -> None:
    """Every answer of the API, byte for byte, from PostgreSQL and from the embedded SQLite store."""
    conversations, records = population()
    lite = make_config(None, "", tmp_path / "lite")
    with serve(migrated, tmp_path / "pg", records) as pg, serve(lite, tmp_path / "lite", records) as sqlite:
        until = (T0 + timedelta(hours=1)).isoformat()
        cursor = pg.get("/management/audit/conversations", params={"limit": "2"}).json()["next_cursor"]
        for path, params in [
            ("/management/audit/conversations", {}),
            ("/management/audit/conversations", {"limit": "2", "cursor": cursor}),
            ("/management/audit/conversations", {"model": "phi3", "key": "team-a"}),
            (f"/management/audit/conversations/{conversations[3]}", {}),
            ("/management/audit/stats", {"since": T0.isoformat(), "until": until}),
        ]:
            answers = [client.get(path, params=params) for client in (pg, sqlite)]
            assert [a.status_code for a in answers] == [200, 200]
            assert answers[0].content == answers[1].content, path
