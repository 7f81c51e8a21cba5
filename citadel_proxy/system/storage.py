"""How much the models, data, logs and backups directories hold, and the filesystems they live on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import psutil

from citadel_proxy.config.schema import Config
from citadel_proxy.system.resources import Disk

# Bounds one request's walk: an accidental `/` as a directory must not keep a thread busy for hours.
MAX_ENTRIES = 2_000_000
# Ollama's Linux installer runs it as the `ollama` user, whose home is here, not the gateway user's.
_SERVICE_MODELS = "/usr/share/ollama/.ollama/models"


class StoragePaths(msgspec.Struct, frozen=True, kw_only=True):
    models: str
    models_source: Literal["config", "OLLAMA_MODELS", "default"]
    data: str
    logs: str
    backups: str


class DirectoryUsage(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    status: Literal["ok", "missing", "not_a_directory", "unreadable"]
    size_bytes: int = 0
    files: int = 0
    directories: int = 0
    # Symlinks are counted, never followed (a link loop or a link to / must not be walked).
    symlinks: int = 0
    # Entries that could not be read (permission denied) or vanished during the walk.
    skipped: int = 0
    truncated: bool = False
    filesystem: Disk | None = None


class StorageUsage(msgspec.Struct, frozen=True, kw_only=True):
    models: DirectoryUsage
    models_source: str
    data: DirectoryUsage
    logs: DirectoryUsage
    backups: DirectoryUsage


def storage_paths(config: Config, environ: Mapping[str, str], models_dir: str | None = None) -> StoragePaths:
    """Where each directory is: an explicit models path, else OLLAMA_MODELS, else Ollama's default."""
    source: Literal["config", "OLLAMA_MODELS", "default"]
    if models_dir:
        models, source = models_dir, "config"
    elif environ.get("OLLAMA_MODELS"):
        models, source = environ["OLLAMA_MODELS"], "OLLAMA_MODELS"
    else:
        home = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".ollama", "models")
        models = next((p for p in (home, _SERVICE_MODELS) if os.path.isdir(p)), home)
        source = "default"
    paths = config.paths
    return StoragePaths(
        models=models, models_source=source, data=paths.data, logs=paths.logs, backups=paths.backups
    )


async def storage_usage(paths: StoragePaths, *, max_entries: int = MAX_ENTRIES) -> StorageUsage:
    """Each directory is walked in its own worker thread."""
    mounts = await asyncio.to_thread(psutil.disk_partitions, True)
    models, data, logs, backups = await asyncio.gather(
        *(
            asyncio.to_thread(directory_usage, path, mounts, max_entries)
            for path in (paths.models, paths.data, paths.logs, paths.backups)
        )
    )
    return StorageUsage(
        models=models, models_source=paths.models_source, data=data, logs=logs, backups=backups
    )


def directory_usage(
    path: str,
    mounts: Sequence[Any],
    max_entries: int = MAX_ENTRIES,
    *,
    scandir: Callable[[str], Any] = os.scandir,
) -> DirectoryUsage:
    """Blocking (run it in a worker thread). `path` may be a symlink; links inside it are not followed."""
    real = os.path.realpath(path)
    if not os.path.exists(real):
        return DirectoryUsage(path=path, status="missing")
    if not os.path.isdir(real):
        return DirectoryUsage(path=path, status="not_a_directory", filesystem=_filesystem(real, mounts))
    tally = _walk(real, max_entries, scandir)
    return DirectoryUsage(
        path=path,
        status="unreadable" if tally.unreadable else "ok",
        size_bytes=tally.size_bytes,
        files=tally.files,
        directories=tally.directories,
        symlinks=tally.symlinks,
        skipped=tally.skipped,
        truncated=tally.truncated,
        filesystem=_filesystem(real, mounts),
    )


@dataclass
class _Tally:
    entries: int = 0
    size_bytes: int = 0
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    skipped: int = 0
    truncated: bool = False
    unreadable: bool = False


def _walk(root: str, max_entries: int, scandir: Callable[[str], Any]) -> _Tally:
    tally = _Tally()
    pending = [root]
    # Hard-linked files are counted once, as du does.
    linked: set[tuple[int, int]] = set()
    while pending:
        path = pending.pop()
        try:
            with scandir(path) as entries:
                for entry in entries:
                    if tally.entries >= max_entries:
                        tally.truncated = True
                        return tally
                    tally.entries += 1
                    _count(entry, tally, pending, linked)
        except OSError:
            # Permission denied, or removed since its parent was listed.
            if path == root:
                tally.unreadable = True
            else:
                tally.skipped += 1
    return tally


def _count(entry: os.DirEntry[str], tally: _Tally, pending: list[str], linked: set[tuple[int, int]]) -> None:
    try:
        if entry.is_symlink():
            tally.symlinks += 1
            return
        if entry.is_dir(follow_symlinks=False):
            tally.directories += 1
            pending.append(entry.path)
            return
        stat = entry.stat(follow_symlinks=False)
    except OSError:
        tally.skipped += 1
        return
    tally.files += 1
    if stat.st_nlink > 1:
        if (stat.st_dev, stat.st_ino) in linked:
            return
        linked.add((stat.st_dev, stat.st_ino))
    tally.size_bytes += stat.st_size


def _filesystem(path: str, mounts: Sequence[Any]) -> Disk | None:
    try:
        usage = psutil.disk_usage(path)
    except OSError:
        return None
    mount = _mount_of(path, mounts)
    if mount is None:
        return Disk.of("/", "", "", usage)
    return Disk.of(mount.mountpoint, mount.device, mount.fstype, usage)


def _mount_of(path: str, mounts: Sequence[Any]) -> Any:
    """The longest mount point holding `path`; of equals, the last mounted, which hides the others."""
    best = None
    for mount in mounts:
        point = mount.mountpoint.rstrip("/") + "/"
        if (path + "/").startswith(point) and (best is None or len(mount.mountpoint) >= len(best.mountpoint)):
            best = mount
    return best
