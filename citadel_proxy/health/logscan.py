"""Counting the ERROR and CRITICAL lines the gateway logged in the last 24 hours (and its rotated files)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from citadel_proxy.config.schema import Config
from citadel_proxy.health.checks import Check
from citadel_proxy.observability.logs import log_path

WINDOW = timedelta(hours=24)
_SERIOUS = frozenset({"ERROR", "CRITICAL"})


class _Line(msgspec.Struct):
    """The two fields of a JSON log line we need; the rest is skipped by the decoder."""

    level: str = ""
    time: datetime | None = None


_decoder = msgspec.json.Decoder(_Line)


def log_file(config: Config) -> Path | None:
    return log_path(config.monitoring.logging, config.paths.logs)


def count_errors(path: Path, since: datetime) -> int:
    """ERROR/CRITICAL lines newer than `since` in `path` and its rotated copies (`path.1`, ...)."""
    files = [path, *sorted(path.parent.glob(path.name + ".[0-9]*"))]
    total = 0
    for file in files:
        try:
            if datetime.fromtimestamp(file.stat().st_mtime, UTC) < since:
                continue
            with file.open("rb") as lines:
                total += sum(1 for line in lines if _serious(line, since))
        except OSError:
            continue
    return total


def _serious(line: bytes, since: datetime) -> bool:
    if line.startswith(b"{"):
        try:
            parsed = _decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        recent = parsed.time is None or _aware(parsed.time) >= since
        return parsed.level in _SERIOUS and recent
    # The text format: "2025-06-01 12:00:00,123 ERROR logger: message", in local time.
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2].decode(errors="replace") not in _SERIOUS:
        return False
    try:
        when = datetime.strptime(f"{parts[0].decode()} {parts[1][:8].decode()}", "%Y-%m-%d %H:%M:%S")
    except (ValueError, UnicodeDecodeError):
        return True
    return when.astimezone(UTC) >= since


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def recent_errors(config: Config) -> Check:
    path = log_file(config)
    if path is None:
        return Check(status="skipped", detail="no log file configured (logs go to stdout / journald)")
    if not path.exists():
        return Check(status="skipped", detail=f"{path} does not exist yet")
    since = datetime.now(UTC) - WINDOW
    count = await asyncio.to_thread(count_errors, path, since)
    data = {"file": str(path), "errors_24h": count}
    if count:
        detail = f"{count} ERROR/CRITICAL lines in the last 24 h in {path}"
        return Check(status="warn", detail=detail, data=data)
    return Check(status="ok", detail=f"no ERROR lines in the last 24 h in {path}", data=data)
