"""Finding conversations by what was said in them (`text=`), PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from citadel_proxy.audit.records import AuditMessage
from citadel_proxy.config.schema import Config
from tests.audit.test_routes import ids, population, serve


@pytest.fixture
def client(any_store: Config, tmp_path: Path) -> Iterator[tuple[TestClient, list[str]]]:
    conversations, records = population()
    # One message with LIKE's own characters, to show they are matched literally.
    records[2] = msgspec.structs.replace(
        records[2], messages=[AuditMessage(role="user", content="Billing 100% due_date", bytes=21)]
    )
    with serve(any_store, tmp_path / "spool", records) as test_client:
        yield test_client, conversations


def test_text_finds_the_conversation_that_said_it(client: tuple[TestClient, list[str]]) -> None:
    http, conversations = client

    def get(**params: Any) -> list[str]:
        return ids(http.get("/management/audit/conversations", params=params).json())

    assert get(text="a3.1") == [conversations[3]]
    # Case-insensitive, anywhere in the message, any role.
    assert get(text="BILLING") == [conversations[1]]
    assert get(text="100% due_") == [conversations[1]]
    # `%` and `_` are not wildcards.
    assert get(text="1_0") == []
    assert get(text="q%") == []
    assert get(text="q", key="team-b") == [conversations[4], conversations[3]]
    assert get(text="nothing like it") == []
