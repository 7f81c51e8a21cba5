"""The embedded default (`database: null`, as `make run` starts): the audit API answers from SQLite."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.core.conftest import AUTH, REPO, running_gateway, write_config
from tests.fakes.ollama import FakeOllama


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def test_audit_routes_answer_after_a_chat_without_a_database(tmp_path: Any) -> None:
    async with FakeOllama() as fake:
        config = write_config(tmp_path, fake.port, REPO / "pipelines", extra="database: null")
        async with (
            running_gateway(config, fake) as gw,
            aiohttp.ClientSession(headers=AUTH) as session,
        ):
            body = {"model": "phi3", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20}
            async with session.post(gw.url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200
                conversation = response.headers["X-Conversation-ID"]
                answer = (await response.json())["choices"][0]["message"]["content"]
            listing = gw.url + "/management/audit/conversations?model=phi3:latest"
            async with asyncio.timeout(20):
                # The writer stores the record a batch later (linger_s), never before the answer.
                while not (page := await _get(session, listing))[1].get("data"):
                    assert page[0] == 200, page
                    await asyncio.sleep(0.05)
            status, detail = await _get(session, f"{gw.url}/management/audit/conversations/{conversation}")
            _, stats = await _get(session, gw.url + "/management/audit/stats")
    assert [c["id"] for c in page[1]["data"]] == [conversation]
    assert page[1]["data"][0]["requests"] == 1 and page[1]["data"][0]["key_name"] == "tester"
    assert status == 200
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "Hello"),
        ("assistant", answer),
    ]
    [row] = stats["data"]
    assert (row["model"], row["requests"], row["errors"]) == ("phi3:latest", 1, 0)
    assert row["p50_ms"] > 0 and row["completion_tokens"] > 0
    assert (tmp_path / "data" / "audit.sqlite3").is_file()
