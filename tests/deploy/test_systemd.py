"""The systemd units pass `systemd-analyze verify` and keep the settings the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.harness import SYSTEMD_DIR

UNITS = sorted(p.name for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".timer"))


def _settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _verifiable_copies(target: Path) -> list[Path]:
    """The units with their programs (absent here: /opt/citadel/venv, /usr/local/bin) set to /bin/true."""
    copies = []
    for unit in UNITS:
        text = (SYSTEMD_DIR / unit).read_text()
        copy = target / unit
        copy.write_text(re.sub(r"^(ExecStart=)\S+", r"\g<1>/bin/true", text, flags=re.MULTILINE))
        copies.append(copy)
    return copies


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    copies = _verifiable_copies(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, copies)], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and not any(unit in output for unit in UNITS):
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:500]}")
    # verify exits 0 on unknown keys and unparsable values ("ignoring"): any word about our files fails.
    assert result.returncode == 0 and not any(unit in output for unit in UNITS), output


def test_gateway_unit_runs_serve_and_stops_gracefully() -> None:
    s = _settings("citadel-proxy.service")
    assert s["ExecStart"][0].endswith("citadel-proxy serve --config /etc/citadel/citadel.yaml")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"] and s["Restart"] == ["on-failure"]
    # hypercorn's graceful_timeout (30 s) must fit inside the stop timeout.
    assert int(s["TimeoutStopSec"][0]) > 30
    assert s["LimitNOFILE"] == ["65536"]


def test_gateway_unit_only_wants_its_optional_services() -> None:
    s = _settings("citadel-proxy.service")
    assert "Requires" not in s
    wants = " ".join(s["Wants"])
    after = " ".join(s["After"])
    for service in ("postgresql.service", "redis-server.service"):
        assert service in wants and service in after


def test_gateway_unit_is_hardened() -> None:
    s = _settings("citadel-proxy.service")
    assert s["User"] == ["citadel"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[key] == [value], key
    assert s["ReadWritePaths"] == ["/opt/citadel/data /opt/citadel/logs"]


def test_ollama_example_listens_on_loopback_only() -> None:
    s = _settings("ollama.service")
    assert "OLLAMA_HOST=127.0.0.1:11434" in s["Environment"]
    assert not any(e.startswith("OLLAMA_ORIGINS") for e in s["Environment"])


@pytest.mark.parametrize(("timer", "command"), [("citadel-backup", "backup"), ("citadel-health", "health")])
def test_timers_run_the_ops_commands(timer: str, command: str) -> None:
    assert f"{timer}.timer" in UNITS
    service = _settings(f"{timer}.service")
    assert service["Type"] == ["oneshot"]
    assert f"citadel-proxy {command} " in service["ExecStart"][0]
