"""Requests refused before their pipeline ran are counted, audited and logged without flooding (issue 12,
items 6 and 7): every kind leaves a metadata-only record in PostgreSQL and a `citadel_requests_total`
increment; a flood of bad keys is cut off with 429 per client address, aggregated into a record with its
count, and summarised in the log instead of written line by line."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from citadel_proxy.audit.spool import read_segment
from citadel_proxy.auth.failures import FailedAuthLimiter
from citadel_proxy.errors import RateLimited
from citadel_proxy.observability.metrics import Metrics
from citadel_proxy.observability.refusals import Refusals
from tests.audit.conftest import TcpProxy, pg_params, wait_for
from tests.core.conftest import AUTH, CHAT, REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama
from tests.hostile.refusals_helpers import (
    BAD_KEY,
    EMBEDDER,
    EMBEDDER_KEY,
    access_lines,
    gateway_config,
    refusal_rows,
    samples,
)

LARGE = {"model": "phi3", "messages": [{"role": "user", "content": "x" * 5000}]}
# (method, path, headers, body, status, reason, key name, metrics route label)
KINDS = [
    ("POST", "/v1/chat/completions", {}, CHAT, 401, "invalid_api_key", None, "/v1/chat/completions"),
    ("POST", "/v1/completions", BAD_KEY, CHAT, 401, "invalid_api_key", None, "/v1/completions"),
    ("POST", "/v1/voice/chat/completions", EMBEDDER, CHAT, 403, "insufficient_scope", "embedder",
     "/v1/voice/chat/completions"),
    ("POST", "/v1/gui/chat/completions", AUTH, b"{not json", 400, "invalid_json", "tester",
     "/v1/gui/chat/completions"),
    ("POST", "/v1/copilot/completions", AUTH, {"model": "nope", "prompt": "x"}, 404, "model_not_found",
     "tester", "/v1/copilot/completions"),
    ("POST", "/v1/agents/stream?type=research", AUTH, LARGE, 413, "payload_too_large",
     "tester", "/v1/agents/stream"),
    # No pipeline is chosen yet, but the key is checked before the known types are listed.
    ("POST", "/v1/agents/stream", AUTH, CHAT, 400, "unknown_agent_type", "tester", "/v1/agents/stream"),
    ("POST", "/api/embed", AUTH, {"model": "nope", "input": "x"}, 404, "model_not_found", "tester",
     "/api/embed"),
    ("GET", "/management/models/list", EMBEDDER, None, 403, "insufficient_scope", "embedder",
     "/management/models/list"),
    ("GET", "/v1/no-such-route", {}, None, 404, "not_found", None, "unmatched"),
]  # fmt: skip


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


async def send(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: object
) -> int:
    if isinstance(body, bytes):
        answer = await client.request(method, path, headers=headers, content=body)
    else:
        answer = await client.request(method, path, headers=headers, json=body)
    assert set(answer.json()["error"]) >= {"message", "type", "code"}
    return answer.status_code


async def test_each_kind_of_refusal_is_audited_and_counted(
    fake: FakeOllama, tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    config = gateway_config(tmp_path, fake.port, postgres_dsn, pg_schema, gateway="  max_body_bytes: 4096")
    async with running_gateway(config, fake) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        for method, path, headers, body, status, *_ in KINDS:
            assert await send(client, method, path, headers, body) == status, path
        exposition = (await client.get("/metrics")).text
    requests = samples(exposition, "citadel_requests_total")
    refused = samples(exposition, "citadel_refused_requests_total")
    for *_, status, reason, _key, label in KINDS:
        labels = (("model", "other"), ("route", label), ("status", str(status)))
        assert requests.get(labels) == 1.0, labels
        assert refused.get((("code", reason), ("route", label))) == 1.0
    # The gateway has shut down: the last interval's records were flushed and written.
    rows = refusal_rows(postgres_dsn, pg_schema)
    seen = {(row["route"], row["status"], row["reason"], row["key_name"]) for row in rows}
    assert seen == {
        (url.split("?")[0], status, reason, key) for _m, url, _h, _b, status, reason, key, _l in KINDS
    }
    assert all(row["client_addr"] == "127.0.0.1" and row["count"] == 1 for row in rows)
    assert all(len(row["request_id"]) == 24 for row in rows)
    assert EMBEDDER_KEY not in str(rows)


async def test_a_refusal_while_postgresql_is_down_reaches_it_through_the_spool(
    fake: FakeOllama, tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    params = pg_params(postgres_dsn)
    proxy = TcpProxy(params["host"], params["port"])
    await proxy.start()
    config = gateway_config(
        tmp_path, fake.port, postgres_dsn, pg_schema,
        audit="refusal_interval_s: 0.1", db_port=proxy.port,
    )  # fmt: skip
    try:
        async with running_gateway(config, fake) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            await proxy.cut()
            # The key database is gone: an unknown key is answered from the worker's copy of the keys (401),
            # and its refusal record waits in the spool until PostgreSQL is back.
            assert await send(client, "POST", "/v1/chat/completions", BAD_KEY, CHAT) == 401
            await proxy.restore()
            await wait_for(lambda: bool(refusal_rows(postgres_dsn, pg_schema)), timeout_s=30)
            exposition = (await client.get("/metrics")).text
    finally:
        await proxy.cut()
    [row] = refusal_rows(postgres_dsn, pg_schema)
    assert (row["route"], row["status"], row["reason"]) == (
        "/v1/chat/completions",
        401,
        "invalid_api_key",
    )
    labels = (("model", "other"), ("route", "/v1/chat/completions"), ("status", "401"))
    assert samples(exposition, "citadel_requests_total")[labels] == 1.0


async def test_a_flood_of_bad_keys_is_cut_off_aggregated_and_summarised(
    fake: FakeOllama,
    tmp_path: Path,
    postgres_dsn: str,
    pg_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit, flood = 5, 300
    config = gateway_config(
        tmp_path, fake.port, postgres_dsn, pg_schema,
        auth=f"  failed_auth_limit: {limit}\n  failed_auth_window_s: 600\n", audit="refusal_interval_s: 600",
    )  # fmt: skip
    statuses: list[int] = []
    retry_after: set[str] = set()
    with caplog.at_level(logging.INFO, logger="citadel.access"):
        async with running_gateway(config, fake) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            for _ in range(flood):
                answer = await client.post("/v1/chat/completions", headers=BAD_KEY, json=CHAT)
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    retry_after.add(answer.headers["Retry-After"])
                    assert answer.json()["error"]["code"] == "too_many_failed_authentications"
            # Locked out: a good key from that address is refused too, so a guess that hit cannot show.
            assert (await client.post("/v1/chat/completions", headers=AUTH, json=CHAT)).status_code == 429
            assert (await client.get("/v1/models", headers=AUTH)).status_code == 429
            assert (await client.get("/health")).status_code in (200, 503)  # takes no key: not locked
            during = len(access_lines(caplog))
            exposition = (await client.get("/metrics")).text
    assert statuses == [401] * limit + [429] * (flood - limit)
    assert all(0 < int(seconds) <= 600 for seconds in retry_after)
    requests = samples(exposition, "citadel_requests_total")
    route = ("route", "/v1/chat/completions")
    assert requests[(("model", "other"), route, ("status", "401"))] == limit
    assert requests[(("model", "other"), route, ("status", "429"))] == flood - limit + 1
    assert samples(exposition, "citadel_rate_limited_total")[(route,)] == flood - limit + 1
    # One line for the first refusal of each kind, then one summary of each kind at the interval's end.
    lines = access_lines(caplog)
    assert during == 3  # 401, 429 on chat, 429 on /v1/models
    summaries = [line for line in lines if line["event"] == "repeated_refusals"]
    assert sorted(line["count"] for line in summaries) == [limit - 1, flood - limit]
    assert all(" more like this in the last " in line["message"] for line in summaries)
    rows = refusal_rows(postgres_dsn, pg_schema)
    by_reason = {(row["route"], row["reason"]): row["count"] for row in rows}
    assert by_reason == {
        ("/v1/chat/completions", "invalid_api_key"): limit,
        ("/v1/chat/completions", "too_many_failed_authentications"): flood - limit + 1,
        ("/v1/models", "too_many_failed_authentications"): 1,
    }
    assert all(row["last_at"] >= row["first_at"] for row in rows)


async def test_the_lockout_stays_with_the_address_that_failed_behind_a_trusted_proxy(
    fake: FakeOllama, tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    config = gateway_config(
        tmp_path, fake.port, postgres_dsn, pg_schema,
        auth="  failed_auth_limit: 3\n", gateway="  trusted_proxies: [127.0.0.1]",
    )  # fmt: skip
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    neighbour = {"X-Forwarded-For": "203.0.113.7"}
    async with running_gateway(config, fake) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        codes = [
            (await client.post("/v1/chat/completions", headers=BAD_KEY | attacker, json=CHAT)).status_code
            for _ in range(5)
        ]
        mine = await client.post("/v1/chat/completions", headers=AUTH | neighbour, json=CHAT)
    assert codes == [401, 401, 401, 429, 429]
    assert mine.status_code == 200
    clients = {row["client_addr"] for row in refusal_rows(postgres_dsn, pg_schema)}
    assert clients == {"203.0.113.66"}


def test_the_failed_auth_limiter_counts_per_address_and_forgets_the_oldest_first() -> None:
    limiter = FailedAuthLimiter(limit=3, window_s=60, max_clients=100)
    for _ in range(3):
        limiter.check("203.0.113.66")
        limiter.failed("203.0.113.66")
    with pytest.raises(RateLimited) as refused:
        limiter.check("203.0.113.66")
    assert 0 < int(refused.value.headers["Retry-After"]) <= 60
    limiter.check("203.0.113.7")  # another address is not concerned
    for _ in range(5):
        limiter.failed("")  # no address (a Unix socket): one shared count would lock out everyone
    limiter.check("")
    # A spray of addresses cannot grow the table past its bound.
    for n in range(1000):
        limiter.failed(f"198.51.{n // 256}.{n % 256}")
    assert len(limiter._windows) <= 100


class Kept:
    """Stands for the audit sink: keeps what it is offered."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def offer_encoded(self, encoded: bytes) -> None:
        self.records.append(json.loads(encoded))


def test_past_its_groups_an_interval_folds_refusals_into_one_group_per_reason() -> None:
    sink = Kept()
    refusals = Refusals(sink, Metrics(), interval_s=10, max_groups=2)  # type: ignore[arg-type]
    for n in range(100):
        refusals.refused(
            route="/v1/chat/completions", label="/v1/chat/completions", client=f"198.51.100.{n}",
            status=401, reason="invalid_api_key", key_name=None, request_id=f"r{n}",
        )  # fmt: skip
    refusals.flush()
    assert [(r["client"], r["route"], r["count"]) for r in sink.records] == [
        ("198.51.100.0", "/v1/chat/completions", 1),
        ("198.51.100.1", "/v1/chat/completions", 1),
        ("*", "*", 98),
    ]
    assert all(r["kind"] == "refusal" for r in sink.records)
    refusals.flush()  # a new interval starts empty
    assert len(sink.records) == 3


async def test_without_a_database_refusals_are_in_the_embedded_store(
    fake: FakeOllama, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fake.port, REPO / "pipelines")
    async with running_gateway(config, fake) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert await send(client, "POST", "/v1/chat/completions", BAD_KEY, CHAT) == 401
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "audit.sqlite3")) as db:
        rows = db.execute(
            "SELECT count, client_addr, route, status, reason, key_name, first_at <= last_at"
            " FROM audit_refusals"
        ).fetchall()
    assert rows == [(1, "127.0.0.1", "/v1/chat/completions", 401, "invalid_api_key", None, 1)]


def test_a_spooled_refusal_is_replayed_and_a_torn_one_kept_aside(tmp_path: Path) -> None:
    sink = Kept()
    refusals = Refusals(sink, Metrics(), interval_s=10, max_groups=10)  # type: ignore[arg-type]
    refusals.refused(
        route="/v1/models", label="/v1/models", client="203.0.113.9", status=403,
        reason="insufficient_scope", key_name="embedder", request_id="r1",
    )  # fmt: skip
    refusals.flush()
    [encoded] = [json.dumps(record, separators=(",", ":")).encode() for record in sink.records]
    segment = tmp_path / "spool-0000000001.jsonl"
    segment.write_bytes(encoded + b"\n" + encoded[:40] + b"\n")
    read = read_segment(segment)
    assert [json.loads(record) for record in read.records] == sink.records
    assert read.bad_lines == [encoded[:40] + b"\n"]
