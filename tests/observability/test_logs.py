"""Access lines and log setup: JSON, the key's name but never the key, never the messages."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel_proxy.config.schema import Logging
from citadel_proxy.errors import UpstreamUnavailable
from citadel_proxy.observability.logs import configure_logging, log_request, parse_size
from tests.observability.conftest import SECRET_KEY, SECRET_TEXT, make_context


@pytest.fixture
def installed() -> Iterator[list[logging.Handler]]:
    """Handlers configure_logging installed, removed afterwards with the root level restored."""
    root = logging.getLogger()
    level = root.level
    handlers: list[logging.Handler] = []
    yield handlers
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_access_line_has_the_facts_and_no_secrets(installed: list[logging.Handler]) -> None:
    out = io.StringIO()
    installed.append(configure_logging(Logging(), stream=out))
    ctx = make_context(request_id="rid-42")
    ctx.outcome.prompt_tokens, ctx.outcome.completion_tokens = 11, 22
    ctx.outcome.first_token_at = ctx.started + 0.25
    ctx.outcome.status, ctx.outcome.error_code = 502, UpstreamUnavailable.code
    log_request(ctx)
    text = out.getvalue()
    assert SECRET_KEY not in text
    assert SECRET_TEXT not in text
    assert "hunter2" not in text
    line = json.loads(text)
    assert line["request_id"] == "rid-42"
    assert line["level"] == "INFO"
    assert line["route"] == "/v1/chat/completions"
    assert line["model"] == "llama3:8b"
    assert line["status"] == 502
    assert line["key"] == "team-a"
    assert line["prompt_tokens"] == 11
    assert line["completion_tokens"] == 22
    assert line["ttft_ms"] == pytest.approx(250.0)
    assert line["duration_ms"] >= 0
    assert line["error_code"] == "upstream_unavailable"
    assert line["time"].endswith("Z")


def test_anonymous_request_and_no_first_token(installed: list[logging.Handler]) -> None:
    out = io.StringIO()
    installed.append(configure_logging(Logging(), stream=out))
    log_request(make_context(principal=None))
    line = json.loads(out.getvalue())
    assert line["key"] is None
    assert line["ttft_ms"] is None


def test_level_above_info_writes_no_access_line(installed: list[logging.Handler]) -> None:
    out = io.StringIO()
    installed.append(configure_logging(Logging(level="WARNING"), stream=out))
    log_request(make_context())
    logging.getLogger("citadel.test").warning("disk %s", "low")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "disk low"


def test_other_records_are_json_with_their_exception(installed: list[logging.Handler]) -> None:
    out = io.StringIO()
    installed.append(configure_logging(Logging(), stream=out))
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("citadel.test").exception("failed")
    line = json.loads(out.getvalue())
    assert line["level"] == "ERROR"
    assert line["logger"] == "citadel.test"
    assert "ValueError: boom" in line["exception"]


def test_configuring_twice_replaces_the_handler(installed: list[logging.Handler]) -> None:
    first, second = io.StringIO(), io.StringIO()
    installed.append(configure_logging(Logging(), stream=first))
    installed.append(configure_logging(Logging(), stream=second))
    log_request(make_context())
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_file_rotates_by_size(installed: list[logging.Handler], tmp_path: Path) -> None:
    settings = Logging(file="gateway.log", max_size="2KB", backup_count=2)
    installed.append(configure_logging(settings, log_dir=str(tmp_path / "logs")))
    for _ in range(40):
        log_request(make_context())
    files = sorted(p.name for p in (tmp_path / "logs").glob("gateway.log*"))
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2", "gateway.log.lock"]
    for name in files[:-1]:
        for line in (tmp_path / "logs" / name).read_text().splitlines():
            assert json.loads(line)["event"] == "request"


def test_worker_reopens_a_file_another_worker_rotated(tmp_path: Path) -> None:
    from citadel_proxy.observability.logs import SharedRotatingFileHandler

    path = tmp_path / "shared.log"
    workers = [SharedRotatingFileHandler(path, maxBytes=200, backupCount=3) for _ in range(2)]
    try:
        record = logging.makeLogRecord({"msg": "x" * 120, "levelno": logging.INFO, "levelname": "INFO"})
        workers[0].emit(record)
        workers[1].emit(record)
        workers[0].emit(record)  # the file is over its size: worker 0 rotates it
        workers[1].emit(record)  # still holds the rotated file: reopens instead of rotating again
        names = sorted(p.name for p in tmp_path.glob("shared.log*"))
        assert names == ["shared.log", "shared.log.1", "shared.log.lock"]
        assert len(path.read_text().splitlines()) == 2
        assert len((tmp_path / "shared.log.1").read_text().splitlines()) == 2
    finally:
        for handler in workers:
            handler.close()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MB", 100 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1.5G", int(1.5 * 1024**3)),
        ("4096", 4096),
        ("10 mb", 10 * 1024**2),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "ten MB", "5 PB", "-1MB"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="max_size"):
        parse_size(text)
