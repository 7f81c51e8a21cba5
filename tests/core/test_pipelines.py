"""Pipeline files: shipped ones load, mistakes are startup errors with file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citadel_proxy.config import ConfigError
from citadel_proxy.pipeline.spec import load_pipelines
from citadel_proxy.stages.registry import stage_types

REPO = Path(__file__).resolve().parents[2]


def load(folder: Path):  # type: ignore[no-untyped-def]
    return load_pipelines(folder, stage_types(), 3600.0)


def test_shipped_pipelines() -> None:
    pipelines = load(REPO / "pipelines")
    assert {"/v1/voice/chat/completions", "/v1/copilot/completions", "/v1/gui/chat/completions",
            "/v1/chat/completions", "/v1/completions"} <= set(pipelines.by_route)  # fmt: skip
    assert {"voice", "copilot", "gui", "research"} <= set(pipelines.agents)
    voice = pipelines.by_route["/v1/voice/chat/completions"]
    assert voice.timeout_s == 30 and voice.stream_default
    chunking = voice.settings_of("chunking")
    assert chunking is not None and chunking.chunk_size == 1  # type: ignore[attr-defined]


def broken(tmp_path: Path, text: str) -> str:
    (tmp_path / "agent.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    return str(caught.value)


def test_unknown_stage(tmp_path: Path) -> None:
    message = broken(tmp_path, "format: chat\nstages:\n  - chunking\n  - telepathy\n")
    assert message.startswith(f"{tmp_path / 'agent.yaml'}:4: stages[1]: unknown stage 'telepathy' (known: ")


def test_unknown_stage_setting(tmp_path: Path) -> None:
    message = broken(tmp_path, "stages:\n  - chunking:\n      chunk_size: 3\n      chunk_sise: 4\n")
    assert message.startswith(f"{tmp_path / 'agent.yaml'}:4: stages[0].chunking.chunk_sise: unknown key")


def test_bad_stage_setting_value(tmp_path: Path) -> None:
    message = broken(tmp_path, "stages:\n  - chunking:\n      chunk_size: 0\n")
    assert (
        message
        == f"{tmp_path / 'agent.yaml'}:3: stages[0].chunking.chunk_size: expected an integer >= 1, got 0"
    )


def test_spec_delay_spelling_and_both_refused(tmp_path: Path) -> None:
    message = broken(
        tmp_path, "stages:\n  - chunking:\n      max_delay_ms: 5\n      delay_between_chunks: 0.1\n"
    )
    assert "set max_delay_ms or delay_between_chunks, not both" in message


def test_unknown_top_level_key_and_format(tmp_path: Path) -> None:
    assert ":1: formt: unknown key" in broken(tmp_path, "formt: chat\n")
    assert ":1: format: " in broken(tmp_path, "format: xml\n")


def test_duplicate_route(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("routes: [/v1/x]\n")
    (tmp_path / "b.yaml").write_text("routes: [/v1/x]\n")
    with pytest.raises(ConfigError, match="already served by"):
        load(tmp_path)


def test_check_command_reports_file_and_line(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "voice.yaml").write_text("stages:\n  - chunking:\n      chunk_size: many\n")
    config = tmp_path / "citadel.yaml"
    config.write_text(f"paths:\n  pipelines: {pipelines}\n")
    result = subprocess.run(
        [sys.executable, "-m", "citadel_proxy", "check", "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        f"{pipelines / 'voice.yaml'}:3: stages[0].chunking.chunk_size: expected an integer" in result.stderr
    )
    good = subprocess.run(
        [sys.executable, "-m", "citadel_proxy", "check", "--config", str(REPO / "conf" / "citadel.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
