"""Hostile and broken config files: an alias bomb, a secret in a typed field, a broken file on SIGHUP."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from citadel_proxy.config import ConfigError, load_config
from citadel_proxy.config.yamlsource import MAX_VALUES
from tests.core.conftest import AUTH, CHAT, REPO, write_config
from tests.core.test_reload import start_serve, until_answering
from tests.fakes.ollama import Behavior, FakeOllama

# Seven lines that stand for 9**7 (4.8 million) strings once the aliases are expanded.
ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text(ALIAS_BOMB)
    message = error_of(path)
    assert f"more than {MAX_VALUES:,} values" in message and str(path) in message


def test_aliases_a_real_file_uses_still_work(tmp_path: Path) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text(
        "ollama:\n  models:\n    - &m {name: 'phi3:latest'}\n"
        "model_routing: {valid_models: [phi3], aliases: {phi3: 'phi3:latest'}}\n"
    )
    assert load_config(path).ollama.models[0].name == "phi3:latest"


def test_substituted_secret_is_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITADEL_TEST_DB_PORT", "hunter2-secret")
    path = tmp_path / "citadel.yaml"
    path.write_text("database:\n  port: ${CITADEL_TEST_DB_PORT}\n")
    message = error_of(path)
    assert "hunter2" not in message
    assert "${CITADEL_TEST_DB_PORT}" in message and ":2:" in message and "database.port" in message


def test_substituted_secret_inside_a_validator_message_is_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITADEL_TEST_PROXY", "s3cret-not-an-ip")
    path = tmp_path / "citadel.yaml"
    path.write_text("gateway:\n  trusted_proxies: ['${CITADEL_TEST_PROXY}']\n")
    message = error_of(path)
    assert "s3cret" not in message and "${CITADEL_TEST_PROXY}" in message


def test_rotation_settings_without_a_log_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text("monitoring:\n  logging:\n    file: null\n    max_size: 100MB\n")
    assert "rotate a log file" in error_of(path)
    path.write_text("monitoring:\n  logging:\n    file: g.log\n    max_size: lots\n")
    assert "monitoring.logging" in error_of(path)


def test_two_disagreeing_log_levels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "citadel.yaml"
    path.write_text("project: {log_level: DEBUG}\nmonitoring: {logging: {level: INFO}}\n")
    assert "disagree" in error_of(path)
    path.write_text("project: {log_level: WARNING}\n")
    assert load_config(path).log_level == "WARNING"
    path.write_text("project: {debug: true}\n")
    assert load_config(path).log_level == "DEBUG"


async def test_sighup_with_a_broken_main_config_is_logged_counted_and_survived(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    async with FakeOllama(behavior=Behavior.counted(3)) as fake:
        config = write_config(tmp_path, fake.port, pipelines, extra_gateway="  server: uvicorn")
        good = config.read_text()
        log_path = tmp_path / "gateway.log"
        log = log_path.open("wb")
        process, url = start_serve(config, 1, log)
        try:
            await until_answering(url, ok=True)
            config.write_text(good + "\ngateway_typo: {}\n")
            process.send_signal(signal.SIGHUP)
            async with aiohttp.ClientSession(headers=AUTH) as session:
                for _ in range(100):
                    if b"config not reloaded" in log_path.read_bytes():
                        break
                    await asyncio.sleep(0.05)
                async with session.get(url + "/metrics") as response:
                    metrics = await response.text()
                assert "citadel_config_last_reload_successful 0.0" in metrics
                assert 'citadel_config_reloads_total{result="failed"} 1.0' in metrics
                async with session.post(url + "/v1/chat/completions", json=CHAT) as response:
                    assert response.status == 200
                config.write_text(good)
                process.send_signal(signal.SIGHUP)
                for _ in range(100):
                    async with session.get(url + "/metrics") as response:
                        if "citadel_config_last_reload_successful 1.0" in await response.text():
                            break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the good config was not reloaded")
            text = log_path.read_text()
            assert "gateway_typo" in text and "previous config and pipelines stay in force" in text
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 20)
            log.close()
