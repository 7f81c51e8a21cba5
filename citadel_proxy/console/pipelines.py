"""Editing pipeline files from the console: validate a candidate as `citadel-proxy check` would, show
the diff, apply it (a backup, an atomic write, then a reload of every worker)."""

from __future__ import annotations

import difflib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import msgspec

from citadel_proxy.config import ConfigError
from citadel_proxy.config.schema import Config
from citadel_proxy.errors import NotFound
from citadel_proxy.pipeline.spec import load_pipelines
from citadel_proxy.stages.registry import stage_types

SUFFIXES = (".yaml", ".yml")


class PipelineFile(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    text: str


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    # As `citadel-proxy check` prints it: `<file>:<line>: <key path>: <what is wrong>`.
    error: str | None
    diff: str


def folder(config: Config) -> Path:
    return Path(config.paths.pipelines)


def files(config: Config) -> list[PipelineFile]:
    found = sorted(p for p in folder(config).iterdir() if p.suffix in SUFFIXES and p.is_file())
    return [PipelineFile(file=p.name, text=p.read_text()) for p in found]


def existing(config: Config, name: str) -> Path:
    """One of the folder's pipeline files, by its bare name: nothing else can be read or written."""
    for path in folder(config).iterdir():
        if path.name == name and path.suffix in SUFFIXES and path.is_file():
            return path
    raise NotFound(f"no pipeline file named {name!r}")


def check(config: Config, name: str, text: str) -> Checked:
    """Load every pipeline with `text` in place of `name`, in a copy of the folder; the messages name
    the real file, as the gateway would report them after the write."""
    target = existing(config, name)
    diff = "".join(
        difflib.unified_diff(
            target.read_text().splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{name} (in force)",
            tofile=f"{name} (edited)",
        )
    )
    with tempfile.TemporaryDirectory(prefix="citadel-pipelines-") as scratch:
        copy = Path(scratch)
        for path in folder(config).iterdir():
            if path.suffix in SUFFIXES and path.is_file():
                shutil.copyfile(path, copy / path.name)
        (copy / name).write_text(text)
        try:
            load_pipelines(copy, stage_types(), config.gateway.timeout)
        except ConfigError as exc:
            return Checked(ok=False, error=str(exc).replace(str(copy), str(folder(config))), diff=diff)
    return Checked(ok=True, error=None, diff=diff)


def write(config: Config, name: str, text: str) -> Path:
    """Keep the file in force under <paths.backups>/pipelines/, then replace it atomically."""
    target = existing(config, name)
    backups = Path(config.paths.backups) / "pipelines"
    backups.mkdir(parents=True, exist_ok=True)
    backup = backups / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 10**9:09d}"
    shutil.copy2(target, backup)
    temporary = target.with_name(f".{name}.console")
    temporary.write_text(text)
    os.replace(temporary, target)
    return backup


def signal_other_workers(multiprocess: bool) -> None:
    """With several workers the parent forwards SIGHUP to each (supervisor.py); this worker has
    already reloaded itself, and reloading once more is harmless."""
    if multiprocess:
        os.kill(os.getppid(), signal.SIGHUP)
