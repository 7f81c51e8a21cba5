"""`citadel-proxy keys create|list|revoke|hash`, against PostgreSQL and against the keys file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest

from citadel_proxy.auth.cli import register
from citadel_proxy.auth.store import open_key_store
from citadel_proxy.config import load_config
from citadel_proxy.config.schema import Database


def keys(*argv: str) -> int:
    root = argparse.ArgumentParser(prog="citadel-proxy")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["keys", *argv])
    result: int = args.func(args)
    return result


def write_config(tmp_path: Path, database: Database | None) -> str:
    lines = ["paths:", f"  data: {tmp_path / 'data'}"]
    if database is not None:
        lines += [
            "database:",
            f"  host: {database.host}",
            f"  port: {database.port}",
            f"  database: {database.database}",
            f"  user: {database.user}",
            f"  schema: {database.db_schema}",
            "  ssl_mode: disable",
        ]
    path = tmp_path / "citadel.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def authenticate(config_file: str, key: str) -> str | None:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_key_store(load_config(Path(config_file)), stack, listen_changes=False)
        principal = await store.authenticate(key)
        return principal.name if principal else None


@pytest.mark.parametrize("with_database", [True, False], ids=["database", "keys-file"])
def test_create_list_revoke(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], with_database: bool
) -> None:
    database = request.getfixturevalue("database") if with_database else None
    config = write_config(tmp_path, database)

    assert (
        keys("--config", config, "create", "team-a", "--scopes", "inference,embeddings", "--rpm", "30") == 0
    )
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("cit_") and "not shown again" in err and key not in err
    assert asyncio.run(authenticate(config, key)) == "team-a"

    assert keys("--config", config, "list") == 0
    table = capsys.readouterr().out
    assert "team-a" in table and "inference,embeddings" in table and "live" in table
    assert key not in table and key[:12] in table  # the display prefix, never the key

    assert keys("--config", config, "list", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "team-a" and "sha256" not in row and key not in json.dumps(row)

    assert keys("--config", config, "revoke", "team-a") == 0
    assert asyncio.run(authenticate(config, key)) is None
    assert keys("--config", config, "revoke", "team-a") == 1
    assert "no live key" in capsys.readouterr().err
    assert keys("--config", config, "list") == 0
    assert "revoked" in capsys.readouterr().out


def test_bad_scope_is_refused_before_anything_happens(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        keys("--config", write_config(tmp_path, None), "create", "x", "--scopes", "root")


def test_hash_prints_the_digest_for_the_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "cit_" + "x" * 43
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert keys("hash") == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(key.encode()).hexdigest()
    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    assert keys("hash") == 1
    assert keys("hash", "--new") == 0
    new, digest = capsys.readouterr().out.split()
    assert new.startswith("cit_") and digest == hashlib.sha256(new.encode()).hexdigest()


def test_unreachable_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text(f"paths:\n  data: {tmp_path}\ndatabase:\n  port: 1\n  pool_timeout: 1\n")
    assert keys("--config", str(path), "list") == 1
    assert "unavailable" in capsys.readouterr().err
