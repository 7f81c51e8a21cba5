"""Migrations 0004, 0007 and 0008 on a trail written before them: UUID conversation ids become text, links
kept; a message's conversation no longer checked twice; the id rule checked the fast way, unchanged."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from citadel_proxy.audit import migrate as migrations
from citadel_proxy.audit.conversations import normalise
from citadel_proxy.config.schema import Config
from tests.audit.conftest import execute, fetch, make_config

CONVERSATION = "0190a8f8-0000-7000-8000-000000000001"
REQUEST = "0190a8f8-0000-7000-8000-0000000000aa"


_MESSAGE = (
    "INSERT INTO messages (request_id, position, conversation_id, created_at, role, content_bytes)"
    " VALUES (%s, %s, %s, now(), 'user', 0)"
)


def _trail_at(postgres_dsn: str, pg_schema: str, tmp_path: Path, version: int) -> tuple[Config, str]:
    """A schema migrated to `version` holding one conversation, one request and its message."""
    config = make_config(postgres_dsn, pg_schema, tmp_path)
    assert config.database is not None
    conninfo = config.database.conninfo()
    migrations.migrate(conninfo, pg_schema, target=version)
    execute(config, "INSERT INTO conversations VALUES (%s, now(), 'team-a', 'phi3:latest')", CONVERSATION)
    execute(
        config,
        "INSERT INTO audit_requests (id, created_at, conversation_id, route, pipeline, stream,"
        " model_requested, model, status, duration_ms, content_mode, request)"
        " VALUES (%s, now(), %s, '/v1/chat/completions', 'chat', false, 'phi3', 'phi3:latest', 200, 1,"
        " 'full', '{}')",
        REQUEST,
        CONVERSATION,
    )
    execute(config, _MESSAGE, REQUEST, 0, CONVERSATION)
    return config, conninfo


def test_uuid_ids_survive_and_opaque_ones_fit(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config, conninfo = _trail_at(postgres_dsn, pg_schema, tmp_path, 3)
    assert migrations.migrate(conninfo, pg_schema, target=4) == [4]
    joined = fetch(
        config,
        "SELECT c.id, c.key_name FROM conversations c JOIN audit_requests r ON r.conversation_id = c.id"
        " JOIN messages m ON m.conversation_id = c.id",
    )
    assert joined == [(CONVERSATION, "team-a")]
    execute(config, "INSERT INTO conversations VALUES ('call_8f2a:leg-1', now(), 'team-b', 'phi3:latest')")
    with pytest.raises(psycopg.errors.CheckViolation):
        execute(config, "INSERT INTO conversations VALUES ('a b', now(), 'team-b', 'phi3:latest')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        execute(
            config,
            "INSERT INTO messages (request_id, position, conversation_id, created_at, role, content_bytes)"
            " VALUES (%s, 1, 'nowhere', now(), 'user', 0)",
            REQUEST,
        )


def test_after_0007_a_message_still_needs_its_request(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """0007 drops the message's second check of its conversation (its request's key holds that); an
    orphan message is still refused, and what was stored before stays."""
    config, conninfo = _trail_at(postgres_dsn, pg_schema, tmp_path, 6)
    assert migrations.migrate(conninfo, pg_schema, target=7) == [7]
    kept = fetch(config, "SELECT m.conversation_id FROM messages m JOIN audit_requests ON id = request_id")
    assert kept == [(CONVERSATION,)]
    constraints = fetch(
        config,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'messages'::regclass AND contype = 'f'",
    )
    assert constraints == [("messages_request_id_fkey",)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        execute(config, _MESSAGE, "0190a8f8-0000-7000-8000-0000000000bb", 1, CONVERSATION)


@pytest.mark.parametrize(
    ("conversation", "kept"),
    [
        ("a", True),
        ("x" * 128, True),
        ("call_8f2a:leg-1.B", True),
        ("", False),
        ("x" * 129, False),
        ("a b", False),
        ("abc\n", False),  # a line end after the id: `$` is the end of the string only
        ("\nabc", False),
        ("é", False),
        ("a/b", False),
    ],
)
def test_0008_keeps_the_id_rule_of_0004(
    postgres_dsn: str, pg_schema: str, tmp_path: Path, conversation: str, kept: bool
) -> None:
    """0008 rewrites the rule on conversation ids for speed: it takes and refuses exactly what 0004's did
    (and Python's own check, `normalise`), and the rows stored before it pass it."""
    config, conninfo = _trail_at(postgres_dsn, pg_schema, tmp_path, 7)
    assert migrations.migrate(conninfo, pg_schema) == [8]
    assert (normalise(conversation) == conversation) is kept
    assert fetch(config, "SELECT %s ~ '^[A-Za-z0-9._:-]{1,128}$'", conversation) == [(kept,)]  # 0004's
    insert = "INSERT INTO conversations VALUES (%s, now(), 'team-b', 'phi3:latest')"
    if kept:
        execute(config, insert, conversation)
        assert fetch(config, "SELECT count(*) FROM conversations WHERE id = %s", conversation) == [(1,)]
    else:
        with pytest.raises(psycopg.errors.CheckViolation):
            execute(config, insert, conversation)
    assert fetch(config, "SELECT id FROM conversations WHERE id = %s", CONVERSATION) == [(CONVERSATION,)]
