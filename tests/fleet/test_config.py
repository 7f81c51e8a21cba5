"""`ollama.backends`: the fleet form, its mistakes named by file and line, and `service` as shorthand."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel_proxy.config import load_config
from citadel_proxy.config.loader import ConfigError


def _load(tmp_path: Path, ollama: str) -> str:
    path = tmp_path / "citadel.yaml"
    path.write_text(f"project: {{name: t}}\nollama:\n{ollama}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_backends_form_loads(tmp_path: Path) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        "ollama:\n  backends:\n"
        "    - {name: gpu-a, url: 'http://10.0.0.11:11434', max_concurrent: 4}\n"
        "    - {name: gpu-b, url: 'https://gpu-b', weight: 2, models: [mixtral]}\n"
        "  keep_warm: [phi3:latest]\n"
    )
    ollama = load_config(path).ollama
    assert [(b.name, b.max_concurrent, b.weight) for b in ollama.backends] == [
        ("gpu-a", 4, 1),
        ("gpu-b", 4, 2),
    ]
    assert ollama.keep_warm == ["phi3:latest"]


def test_duplicate_names_are_refused_with_file_and_line(tmp_path: Path) -> None:
    message = _load(
        tmp_path,
        "  backends:\n    - {name: gpu-a, url: 'http://a:11434'}\n    - {name: gpu-a, url: 'http://b:11434'}",
    )
    assert "citadel.yaml:" in message
    assert "'gpu-a' is used twice" in message


def test_bad_url_is_refused_at_its_entry(tmp_path: Path) -> None:
    message = _load(
        tmp_path,
        "  backends:\n    - {name: gpu-a, url: 'http://a:11434'}\n    - {name: gpu-b, url: 'ftp://b'}",
    )
    assert "citadel.yaml:5" in message
    assert "ftp://b" in message


def test_both_forms_at_once_are_refused(tmp_path: Path) -> None:
    message = _load(
        tmp_path, "  service: {host: 10.0.0.9}\n  backends:\n    - {name: gpu-a, url: 'http://a:11434'}"
    )
    assert "citadel.yaml:" in message
    assert "not both" in message
