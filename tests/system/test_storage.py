"""Directory walks: sizes, links never followed, unreadable parts counted, bounded; where paths come from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from citadel_proxy.config.schema import Config, Paths
from citadel_proxy.system.storage import StoragePaths, directory_usage, storage_paths, storage_usage


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """models/: 3 files of 100+20+5 bytes, a hard link, a symlink loop, a link to /, an empty dir."""
    root = tmp_path / "models"
    (root / "blobs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "blobs" / "a").write_bytes(b"x" * 100)
    (root / "blobs" / "deep" / "b").write_bytes(b"x" * 20)
    (root / "manifest").write_bytes(b"x" * 5)
    os.link(root / "blobs" / "a", root / "blobs" / "a-hardlink")
    (root / "loop").symlink_to(root)
    (root / "blobs" / "ping").symlink_to(root / "blobs" / "pong")
    (root / "blobs" / "pong").symlink_to(root / "blobs" / "ping")
    (root / "everything").symlink_to("/")
    return root


def mounts() -> list[Any]:
    return psutil.disk_partitions(all=True)


def test_counts_files_once_and_never_follows_links(tree: Path) -> None:
    usage = directory_usage(str(tree), mounts())
    assert usage.status == "ok"
    assert usage.size_bytes == 125
    assert usage.files == 4  # the hard link is a file, its bytes are counted once
    assert usage.directories == 3
    assert usage.symlinks == 4
    assert (usage.skipped, usage.truncated) == (0, False)
    assert usage.filesystem is not None
    assert usage.filesystem.total_bytes >= usage.filesystem.free_bytes > 0
    assert str(tree).startswith(usage.filesystem.mountpoint)


def test_the_directory_itself_may_be_a_symlink(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "models-link"
    link.symlink_to(tree)
    usage = directory_usage(str(link), mounts())
    assert (usage.path, usage.status, usage.size_bytes) == (str(link), "ok", 125)


def test_unreadable_parts_are_skipped_not_fatal(tree: Path) -> None:
    def scandir(path: str) -> Any:
        if path.endswith("deep"):
            raise PermissionError(13, "Permission denied", path)
        return os.scandir(path)

    usage = directory_usage(str(tree), mounts(), scandir=scandir)
    assert usage.status == "ok"
    assert (usage.skipped, usage.size_bytes, usage.files) == (1, 105, 3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 directory anyway")
def test_a_real_chmod_000_directory_is_skipped(tree: Path) -> None:
    locked = tree / "blobs" / "deep"
    locked.chmod(0)
    try:
        usage = directory_usage(str(tree), mounts())
    finally:
        locked.chmod(0o755)
    assert (usage.status, usage.skipped, usage.size_bytes) == ("ok", 1, 105)


def test_an_unreadable_root_says_so(tree: Path) -> None:
    def scandir(path: str) -> Any:
        raise PermissionError(13, "Permission denied", path)

    usage = directory_usage(str(tree), mounts(), scandir=scandir)
    assert (usage.status, usage.files, usage.skipped) == ("unreadable", 0, 0)
    assert usage.filesystem is not None


def test_a_file_vanishing_mid_walk_is_skipped(tree: Path) -> None:
    def scandir(path: str) -> Any:
        entries = list(os.scandir(path))
        if path == str(tree):
            (tree / "manifest").unlink()
        return _Listing(entries)

    usage = directory_usage(str(tree), mounts(), scandir=scandir)
    assert (usage.status, usage.skipped, usage.size_bytes) == ("ok", 1, 120)


class _Listing(list[Any]):
    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_walk_stops_at_the_bound(tree: Path) -> None:
    usage = directory_usage(str(tree), mounts(), max_entries=3)
    assert usage.truncated is True
    assert usage.files + usage.directories + usage.symlinks == 3


def test_missing_and_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert directory_usage(str(tmp_path / "nope"), mounts()).status == "missing"
    assert directory_usage(str(tmp_path / "nope"), mounts()).filesystem is None
    assert directory_usage(str(tmp_path / "file"), mounts()).status == "not_a_directory"


def test_models_path_explicit_then_env_then_home(tmp_path: Path) -> None:
    config = Config(paths=Paths(data="/d", logs="/l", backups="/b"))
    env = {"OLLAMA_MODELS": "/env/models", "HOME": str(tmp_path)}
    explicit = storage_paths(config, env, models_dir="/explicit")
    assert (explicit.models, explicit.models_source) == ("/explicit", "config")
    assert (explicit.data, explicit.logs, explicit.backups) == ("/d", "/l", "/b")
    from_env = storage_paths(config, env)
    assert (from_env.models, from_env.models_source) == ("/env/models", "OLLAMA_MODELS")
    (tmp_path / ".ollama" / "models").mkdir(parents=True)
    default = storage_paths(config, {"HOME": str(tmp_path)})
    assert (default.models, default.models_source) == (str(tmp_path / ".ollama" / "models"), "default")


async def test_storage_usage_reports_each_directory(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "db").write_bytes(b"x" * 7)
    paths = StoragePaths(
        models=str(tree),
        models_source="OLLAMA_MODELS",
        data=str(tmp_path / "data"),
        logs=str(tmp_path / "log"),
        backups=str(tmp_path / "data"),
    )
    usage = await storage_usage(paths)
    assert (usage.models.size_bytes, usage.models_source) == (125, "OLLAMA_MODELS")
    assert (usage.data.size_bytes, usage.data.files) == (7, 1)
    assert usage.logs.status == "missing"
    assert usage.backups == usage.data
