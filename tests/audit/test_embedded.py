"""`make run`'s config (`database: null`): the README's audit examples answer from the SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from citadel_proxy.auth.keys import hash_key
from tests.core.conftest import AUTH, REPO, TEST_KEY, running_gateway
from tests.fakes.ollama import FakeOllama


def make_run_config(tmp_path: Path, ollama_port: int) -> Path:
    """conf/citadel.yaml as it is, but for Ollama on the fake's port, the paths under tmp_path, and an
    application key (made with `citadel-proxy keys hash`, as the README shows)."""
    text = (REPO / "conf" / "citadel.yaml").read_text()
    assert "database: null" in text and "port: 11434" in text and "../var/" in text
    text = text.replace("port: 11434", f"port: {ollama_port}").replace("../var/", f"{tmp_path}/var/")
    text = text.replace("../pipelines", str(REPO / "pipelines"))
    key = f"{{name: my-app, sha256: {hash_key(TEST_KEY).hex()}, scopes: [inference]}}"
    text += f"\nauth:\n  keys:\n    - {key}\n"
    path = tmp_path / "conf" / "citadel.yaml"
    path.parent.mkdir()
    path.write_text(text)
    return path


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def test_audit_routes_answer_after_a_chat_with_make_runs_config(tmp_path: Path) -> None:
    async with FakeOllama() as fake, running_gateway(make_run_config(tmp_path, fake.port), fake) as gw:
        admin = (tmp_path / "var" / "data" / "admin.key").read_text().strip()
        async with aiohttp.ClientSession(headers=AUTH) as app:
            body = {"model": "phi3", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20}
            async with app.post(gw.url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200
                conversation = response.headers["X-Conversation-ID"]
                answer = (await response.json())["choices"][0]["message"]["content"]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            listing = gw.url + "/management/audit/conversations?model=phi3:latest&limit=20"
            async with asyncio.timeout(20):
                # The writer stores the record a batch later (linger_s), never before the answer.
                while not (page := await _get(session, listing))[1].get("data"):
                    assert page[0] == 200, page
                    await asyncio.sleep(0.05)
            status, detail = await _get(session, f"{gw.url}/management/audit/conversations/{conversation}")
            stats_status, stats = await _get(session, gw.url + "/management/audit/stats")
    assert [c["id"] for c in page[1]["data"]] == [conversation]
    assert page[1]["data"][0]["requests"] == 1 and page[1]["data"][0]["key_name"] == "my-app"
    assert status == 200 and stats_status == 200
    said = [(m["role"], m["content"]) for m in detail["messages"]]
    assert said == [("user", "Hello"), ("assistant", answer)]
    [row] = stats["data"]
    assert (row["model"], row["requests"], row["errors"]) == ("phi3:latest", 1, 0)
    assert row["p50_ms"] > 0 and row["completion_tokens"] > 0
    assert (tmp_path / "var" / "data" / "audit.sqlite3").is_file()
