"""JSON log lines: one access line per request, and every other record as JSON too, to stdout or a file.

An access line names the key (its configured name), never the key itself, and carries no message text:
it is built from the context's identifiers and counters only, so nothing a client sent can leak into it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import msgspec

from citadel_proxy.config.schema import Logging

if TYPE_CHECKING:
    from citadel_proxy.pipeline.types import Context

ACCESS_LOGGER = "citadel.access"
# Marks the handler configure_logging installed, so a second call replaces it instead of doubling lines.
_HANDLER_NAME = "citadel"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_access = logging.getLogger(ACCESS_LOGGER)
_encode = msgspec.json.Encoder().encode


class AccessLine(msgspec.Struct, kw_only=True):
    time: datetime
    level: str = "INFO"
    event: str = "request"
    request_id: str
    route: str
    model: str = ""
    status: int
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    key: str | None = None
    client: str
    stream: bool = False
    cache_hit: bool = False
    error_code: str | None


class TracedAccessLine(AccessLine, kw_only=True):
    """The access line of a traced request (monitoring.tracing): its trace and span, as W3C writes them."""

    trace_id: str = ""
    span_id: str = ""


def log_request(ctx: Context) -> None:
    """Write the request's access line; call once, when the response has ended (or failed)."""
    if not _access.isEnabledFor(logging.INFO):
        return
    outcome = ctx.outcome
    first = outcome.first_token_at
    line = (AccessLine if ctx.trace is None else TracedAccessLine)(
        time=datetime.now(UTC),
        request_id=ctx.request_id,
        route=ctx.route,
        model=ctx.model,
        status=outcome.status,
        duration_ms=round((time.perf_counter() - ctx.started) * 1000, 3),
        ttft_ms=round((first - ctx.started) * 1000, 3) if first is not None else None,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        key=ctx.principal.name if ctx.principal is not None else None,
        client=ctx.client,
        stream=ctx.stream,
        cache_hit=outcome.cache_hit,
        error_code=outcome.error_code,
    )
    if isinstance(line, TracedAccessLine) and ctx.trace is not None:
        line.trace_id, line.span_id = ctx.trace.ids()
    _emit(line)


def log_refusal(
    request_id: str,
    route: str,
    client: str,
    status: int,
    error_code: str | None,
    *,
    key: str | None = None,
    model: str = "",
    started: float | None = None,
) -> None:
    """The access line of a request refused before it had a context (bad body, unknown route, auth);
    `key` and `model` as far as they were known when it was refused, `started` its perf_counter start."""
    if not _access.isEnabledFor(logging.INFO):
        return
    line = AccessLine(
        time=datetime.now(UTC),
        request_id=request_id,
        route=route,
        model=model,
        duration_ms=round((time.perf_counter() - started) * 1000, 3) if started is not None else 0.0,
        status=status,
        key=key,
        client=client,
        error_code=error_code,
    )
    _emit(line)


class RepeatsLine(msgspec.Struct, kw_only=True):
    """Stands for the access lines of refusals left unwritten because they repeated one just written."""

    time: datetime
    level: str = "INFO"
    event: str = "repeated_refusals"
    message: str
    route: str
    status: int
    key: str | None
    client: str
    error_code: str | None
    count: int
    seconds: float


def log_repeats(
    route: str, client: str, status: int, error_code: str | None, key: str | None, count: int, seconds: float
) -> None:
    """ "N more like this in the last T s": the refusals whose access lines were not written."""
    if not _access.isEnabledFor(logging.INFO):
        return
    seconds = round(seconds, 3)
    line = RepeatsLine(
        time=datetime.now(UTC),
        message=f"{count} more like this in the last {seconds:g} s",
        route=route,
        status=status,
        key=key,
        client=client,
        error_code=error_code,
        count=count,
        seconds=seconds,
    )
    _emit(line)


def _emit(line: AccessLine | RepeatsLine) -> None:
    # handle() rather than info(): skips the caller lookup, and the message needs no %-formatting.
    _access.handle(_access.makeRecord(ACCESS_LOGGER, logging.INFO, "", 0, _encode(line).decode(), (), None))


class JsonFormatter(logging.Formatter):
    """Access lines pass through as built; any other record becomes one JSON object. `identity`
    (project name and environment) ends every line, so lines from several gateways can be told apart."""

    def __init__(self, identity: dict[str, str] | None = None) -> None:
        super().__init__()
        # Encoded once: appended to each line in place of its closing brace.
        self._tail = "," + _encode(identity).decode()[1:] if identity else "}"

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()[:-1] + self._tail
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()[:-1] + self._tail


class SharedRotatingFileHandler(RotatingFileHandler):
    """Size rotation for one file shared by several worker processes.

    Lines are appended (O_APPEND), so workers never overwrite each other. Rotation holds an flock on
    `<file>.lock`; a worker that finds the file already rotated by another reopens it instead of rotating
    again. The size test is one lseek per line (the base class formats every record twice to decide).
    """

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        return self.stream.seek(0, os.SEEK_END) >= self.maxBytes

    def doRollover(self) -> None:
        with open(self.baseFilename + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._rotated_elsewhere():
                if self.stream is not None:
                    self.stream.close()
                self.stream = self._open()
            else:
                super().doRollover()

    def _rotated_elsewhere(self) -> bool:
        if self.stream is None:
            return False
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.stream.fileno())
        return (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)


def parse_size(text: str) -> int:
    """Bytes in a size such as "100MB", "512KiB", "1.5G" or "4096" (units are powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"monitoring.logging.max_size: {text!r} is not a size such as 100MB")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def log_path(settings: Logging, log_dir: str | None) -> Path | None:
    """The file records go to (a relative name is taken from `log_dir`), or None for stdout."""
    if not settings.file:
        return None
    path = Path(settings.file)
    return path if path.is_absolute() or log_dir is None else Path(log_dir) / path


def configure_logging(
    settings: Logging,
    *,
    log_dir: str | None = None,
    stream: TextIO | None = None,
    level: str | None = None,
    identity: dict[str, str] | None = None,
) -> logging.Handler:
    """Send every record to stdout (or `stream`), or to `settings.file` with size rotation.

    A relative file name is taken from `log_dir` (the config's `paths.logs`). Calling it again replaces
    the handler it installed before. Returns the handler, so a caller can remove it.
    """
    handler: logging.Handler
    path = log_path(settings, log_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = SharedRotatingFileHandler(
            path,
            maxBytes=parse_size(settings.rotate_bytes),
            backupCount=settings.rotated_files,
            encoding="utf-8",
        )
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.set_name(_HANDLER_NAME)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(identity))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level or settings.level or "INFO")
    return handler
