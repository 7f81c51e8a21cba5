"""The first admin key: created once, in a 0600 file, registered where the gateway finds it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel_proxy.auth.bootstrap import bootstrap_admin_key
from citadel_proxy.auth.filekeys import KEYS_FILE
from citadel_proxy.auth.store import open_key_store
from citadel_proxy.config.schema import AuthConfig, Config, Database, Paths
from tests.auth.conftest import MakeConfig


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: a file would come out world-readable unless its mode is set when it is created."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
async def test_without_database_the_key_goes_to_a_0600_file_and_its_digest_to_keys_json(
    make_config: MakeConfig, stack: contextlib.AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config()
    store = await open_key_store(config, stack)
    assert not await store.has_admin()
    with caplog.at_level(logging.WARNING):
        path = await bootstrap_admin_key(config, store)
    assert path == Path(config.paths.data) / "admin.key"
    assert mode(path) == 0o600
    assert mode(Path(config.paths.data) / KEYS_FILE) == 0o600
    key = path.read_text().strip()
    assert str(path) in caplog.text and key not in caplog.text

    principal = await store.authenticate(key)
    assert principal is not None and "admin" in principal.scopes
    assert key not in (Path(config.paths.data) / KEYS_FILE).read_text()
    assert await bootstrap_admin_key(config, store) is None  # there is an admin key now


@pytest.mark.usefixtures("permissive_umask")
async def test_with_database_the_digest_goes_to_the_database(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    config = make_config(database)
    store = await open_key_store(config, stack, listen_changes=False)
    path = await bootstrap_admin_key(config, store)
    assert path is not None and mode(path) == 0o600
    assert not (Path(config.paths.data) / KEYS_FILE).exists()
    [record] = await store.list()
    assert (record.name, record.scopes, record.source) == ("admin", ["admin"], "database")
    assert await store.authenticate(path.read_text().strip()) is not None


async def test_workers_starting_together_create_one_key(
    make_config: MakeConfig, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    config = make_config(database)
    stores = [await open_key_store(config, stack, listen_changes=False) for _ in range(3)]
    paths = await asyncio.gather(*(bootstrap_admin_key(config, s) for s in stores))
    assert sum(p is not None for p in paths) == 1
    assert len(await stores[0].list()) == 1


async def test_a_key_file_left_by_an_interrupted_start_is_adopted(
    make_config: MakeConfig, stack: contextlib.AsyncExitStack
) -> None:
    config = make_config()
    store = await open_key_store(config, stack)
    path = await bootstrap_admin_key(config, store)
    assert path is not None
    (Path(config.paths.data) / KEYS_FILE).unlink()  # the digest never got stored
    again = await bootstrap_admin_key(config, store)
    assert again == path
    assert await store.authenticate(path.read_text().strip()) is not None


async def test_gateways_on_other_hosts_sharing_the_database_start_together(
    tmp_path: Path, database: Database, stack: contextlib.AsyncExitStack
) -> None:
    """Each host has its own data directory, so the file lock does not order them: the database does."""
    configs = [
        Config(paths=Paths(data=str(tmp_path / f"host{n}")), database=database, auth=AuthConfig())
        for n in range(4)
    ]
    stores = [await open_key_store(config, stack, listen_changes=False) for config in configs]
    paths = await asyncio.gather(*(bootstrap_admin_key(c, s) for c, s in zip(configs, stores, strict=True)))
    [path] = [p for p in paths if p is not None]
    [record] = await stores[0].list()
    assert record.name == "admin"
    assert await stores[0].authenticate(path.read_text().strip()) is not None
    # No host is left holding a key file that was never registered.
    assert [c for c in configs if (Path(c.paths.data) / "admin.key").exists()] == [
        c for c, p in zip(configs, paths, strict=True) if p is not None
    ]
