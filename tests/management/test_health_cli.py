"""`citadel-proxy health` run as a subprocess against a running gateway, as the systemd timer runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from citadel_proxy.health.logscan import count_errors
from tests.core.conftest import AUTH, Gateway, free_port
from tests.fakes.ollama import FakeOllama

KEY = AUTH["Authorization"].removeprefix("Bearer ")


async def health(
    gateway: Gateway, *args: str, key: str | None = KEY, config: Path | None = None
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CITADEL_API_KEY", "CITADEL_CONFIG")}
    if key is not None:
        env["CITADEL_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citadel_proxy",
        "health",
        "--config",
        str(config or gateway.config_path),
        "--url",
        gateway.url,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def health_json(gateway: Gateway, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    code, out, _err = await health(gateway, "--json", **kwargs)
    return code, json.loads(out)


async def test_all_up(gateway: Gateway) -> None:
    code, out, err = await health(gateway)
    assert code == 0, out + err
    assert "status: OK" in out
    assert "OK      gateway" in out
    assert "5 installed" in out


async def test_json_report(gateway: Gateway) -> None:
    code, report = await health_json(gateway)
    assert code == 0
    assert report["status"] == "ok" and report["down"] == []
    checks = report["checks"]
    assert set(checks) == {"gateway", "ollama", "models", "database", "redis", "resources", "recent_errors"}
    assert checks["ollama"]["status"] == "ok"
    assert checks["ollama"]["data"]["version"]
    assert checks["models"]["data"] == {"count": 5, "configured": 3}
    assert checks["database"]["status"] == checks["redis"]["status"] == "skipped"
    assert 0 <= checks["resources"]["data"]["cpu_percent"] <= 100
    assert checks["resources"]["status"] in ("ok", "warn")


async def test_ollama_down_fails(gateway: Gateway, fake: FakeOllama) -> None:
    await fake.close()
    code, report = await health_json(gateway)
    assert code == 1
    assert report["status"] == "down"
    assert {"gateway", "ollama", "models"} <= set(report["down"])
    assert "cannot connect to Ollama" in report["checks"]["ollama"]["detail"]
    code, out, _ = await health(gateway)
    assert code == 1
    assert "status: DOWN (gateway, ollama, models)" in out


async def test_gateway_down_fails(gateway: Gateway) -> None:
    gateway.url = f"http://127.0.0.1:{free_port()}"
    code, report = await health_json(gateway)
    assert code == 1
    assert report["checks"]["gateway"]["status"] == "down"


async def test_without_a_key_management_checks_are_skipped(gateway: Gateway) -> None:
    code, report = await health_json(gateway, key=None)
    assert code == 0
    assert report["checks"]["ollama"]["status"] == report["checks"]["models"]["status"] == "skipped"


async def test_the_admin_key_file_in_the_data_directory_is_used(gateway: Gateway) -> None:
    data = gateway.config_path.parent / "data"
    data.mkdir(exist_ok=True)
    (data / "admin.key").write_text(KEY + "\n")
    code, report = await health_json(gateway, key=None)
    assert code == 0
    assert report["checks"]["models"]["status"] == "ok"


async def test_a_refused_key_is_reported(gateway: Gateway) -> None:
    code, report = await health_json(gateway, key="cit_" + "x" * 43)
    assert code == 1
    assert "answered 401" in report["checks"]["ollama"]["detail"]


def _with_services(config: Path, postgres_dsn: str, redis_port: int) -> Path:
    params = conninfo_to_dict(postgres_dsn)
    password = params.get("password")
    database = (
        f"database: {{host: {params.get('host', '127.0.0.1')}, port: {params.get('port', 5432)}, "
        f"database: {params.get('dbname', 'postgres')}, user: {params.get('user', 'postgres')}, "
        + (f"password: {password}, " if password else "")
        + "ssl_mode: disable}\n"
        f"redis: {{host: 127.0.0.1, port: {redis_port}, socket_connect_timeout: 1}}\n"
    )
    path = config.with_name("health.yaml")
    path.write_text(config.read_text() + database)
    return path


async def test_database_and_redis(gateway: Gateway, postgres_dsn: str, redis_url: str) -> None:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    config = _with_services(gateway.config_path, postgres_dsn, redis_port)
    code, report = await health_json(gateway, config=config)
    assert code == 0, report
    assert report["checks"]["database"]["status"] == "ok"
    assert report["checks"]["redis"]["status"] == "ok"

    config = _with_services(gateway.config_path, postgres_dsn, free_port())
    code, report = await health_json(gateway, config=config)
    assert code == 1
    assert report["down"] == ["redis"]


async def test_recent_errors_are_counted(gateway: Gateway) -> None:
    logs = gateway.config_path.parent / "log"
    logs.mkdir(exist_ok=True)
    now = datetime.now(UTC)
    lines = [
        {"time": now.isoformat(), "level": "ERROR", "logger": "x", "message": "boom"},
        {"time": now.isoformat(), "level": "INFO", "logger": "x", "message": "fine"},
        {"time": (now - timedelta(days=2)).isoformat(), "level": "ERROR", "logger": "x", "message": "old"},
    ]
    (logs / "gateway.log").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (logs / "gateway.log.1").write_text(json.dumps(lines[0]) + "\nnot json\n")
    local = (now - timedelta(minutes=1)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    (logs / "gateway.log.2").write_text(f"{local},123 CRITICAL x: text format\n{local},124 INFO x: ok\n")
    assert count_errors(logs / "gateway.log", now - timedelta(hours=24)) == 3

    config = gateway.config_path.with_name("logged.yaml")
    config.write_text(gateway.config_path.read_text() + "monitoring: {logging: {file: gateway.log}}\n")
    code, report = await health_json(gateway, config=config)
    assert code == 0  # errors in the log are a warning, not an outage
    assert report["checks"]["recent_errors"]["status"] == "warn"
    assert report["checks"]["recent_errors"]["data"]["errors_24h"] == 3
