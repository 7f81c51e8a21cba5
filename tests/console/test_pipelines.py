"""Editing a pipeline from the console: `check`'s file:line message, the diff, a backup, a reload."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.console.conftest import signed_in
from tests.core.conftest import AUTH, CHAT, REPO, Gateway, running_gateway, write_config
from tests.fakes.ollama import FakeOllama


@pytest.fixture
async def editable(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway over a copy of the pipelines folder (the repository's files are never written)."""
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", folder)
    async with running_gateway(write_config(tmp_path, fake.port, folder), fake) as gw:
        yield gw


async def post(session: aiohttp.ClientSession, path: str, body: object, token: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.post(path, json=body, headers={"X-CSRF-Token": token}) as response:
        return response.status, await response.json()


async def test_an_invalid_edit_is_reported_like_check_and_not_written(editable: Gateway) -> None:
    folder = editable.config_path.parent / "pipelines"
    original = (folder / "voice.yaml").read_text()
    broken = original.replace("chunk_size: 1", "chunk_size: lots")
    async with signed_in(editable) as (session, token):
        status, checked = await post(
            session, "/console/api/pipelines/check", {"file": "voice.yaml", "text": broken}, token
        )
        assert status == 200 and not checked["ok"]
        line = original.splitlines().index("      chunk_size: 1") + 1
        assert checked["error"].startswith(f"{folder}/voice.yaml:{line}: stages[4].chunking.chunk_size")
        assert "-      chunk_size: 1\n+      chunk_size: lots" in checked["diff"]
        status, applied = await post(
            session, "/console/api/pipelines/apply", {"file": "voice.yaml", "text": broken}, token
        )
        assert status == 422 and applied["error"] == checked["error"]
    assert (folder / "voice.yaml").read_text() == original


async def test_a_valid_edit_is_backed_up_written_and_served(editable: Gateway) -> None:
    folder = editable.config_path.parent / "pipelines"
    original = (folder / "voice.yaml").read_text()
    edited = original.replace("requests_per_minute: 600", "requests_per_minute: 321")
    async with signed_in(editable) as (session, token):
        status, applied = await post(
            session, "/console/api/pipelines/apply", {"file": "voice.yaml", "text": edited}, token
        )
    assert status == 200 and applied["ok"] and applied["reloaded"]
    assert Path(applied["backup"]).read_text() == original  # noqa: ASYNC240
    assert (folder / "voice.yaml").read_text() == edited
    async with (
        aiohttp.ClientSession(editable.url, headers=AUTH) as client,
        client.post("/v1/voice/chat/completions", json=CHAT | {"stream": False}) as response,
    ):
        assert response.status == 200
        assert response.headers["x-ratelimit-limit-requests"] == "321"


async def test_only_the_folders_pipeline_files_can_be_named(editable: Gateway) -> None:
    async with signed_in(editable) as (session, token):
        for name in ["../citadel.yaml", "citadel.yaml", "voice.yaml/../chat.yaml"]:
            status, _ = await post(
                session, "/console/api/pipelines/apply", {"file": name, "text": "x"}, token
            )
            assert status == 404, name
