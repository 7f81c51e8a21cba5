"""`citadel-proxy health [--config] [--json] [--url] [--key-file]`: a report; exit 1 when something is down.

The management endpoints need an admin key: `--key-file`, else `$CITADEL_API_KEY`, else the
`admin.key` the gateway wrote in its data directory on first start (when this user may read it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec

from citadel_proxy.auth.bootstrap import ADMIN_KEY_FILE
from citadel_proxy.config import ConfigError, add_config_option, chosen_config, config_path, load_config
from citadel_proxy.config.schema import Config
from citadel_proxy.health import checks, logscan
from citadel_proxy.health.checks import Check

KEY_ENV = "CITADEL_API_KEY"
_HTTP_TIMEOUT_S = 15.0
_ANY_ADDRESS = ("", "0.0.0.0", "::")


class Report(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok", "down"]
    checked_at: datetime
    gateway_url: str
    down: list[str]
    checks: dict[str, Check]


def register(subparsers: Any) -> None:
    health = subparsers.add_parser("health", help="check the gateway, Ollama, database, Redis, resources")
    add_config_option(health)
    health.add_argument("--json", action="store_true", help="one JSON document instead of the text report")
    health.add_argument("--url", help="the gateway's URL (default: http://127.0.0.1:<gateway.port>)")
    health.add_argument(
        "--key-file", help=f"admin key file (default: ${KEY_ENV}, then <data>/{ADMIN_KEY_FILE})"
    )
    health.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path(chosen_config(args)))
        key = admin_key(args.key_file, config)
    except (ConfigError, OSError) as exc:
        sys.stderr.write(f"citadel-proxy health: {exc}\n")
        return 2
    url = (args.url or default_url(config)).rstrip("/")
    report = asyncio.run(collect(config, url, key))
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n" if args.json else render(report))
    return 0 if report.status == "ok" else 1


def default_url(config: Config) -> str:
    host = config.gateway.host
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.gateway.port}"


def admin_key(key_file: str | None, config: Config) -> str | None:
    """An explicit --key-file must be readable; the default file is used only when it is."""
    if key_file is not None:
        return Path(key_file).read_text().strip() or None
    if os.environ.get(KEY_ENV, "").strip():
        return os.environ[KEY_ENV].strip()
    default = Path(config.paths.data) / ADMIN_KEY_FILE
    try:
        return default.read_text().strip() or None
    except OSError:
        return None


async def collect(config: Config, url: str, key: str | None) -> Report:
    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        names = ("gateway", "ollama", "models", "database", "redis", "resources", "recent_errors")
        results = await asyncio.gather(
            checks.gateway(session, url, key),
            checks.ollama(session, url, key),
            checks.models(session, url, key),
            checks.database(config),
            checks.redis(config),
            checks.resources(config),
            logscan.recent_errors(config),
        )
    found = dict(zip(names, results, strict=True))
    down = [name for name, check in found.items() if check.status == "down"]
    return Report(
        status="down" if down else "ok",
        checked_at=datetime.now(UTC),
        gateway_url=url,
        down=down,
        checks=found,
    )


def render(report: Report) -> str:
    lines = [
        f"Citadel proxy health check, {report.checked_at:%Y-%m-%d %H:%M:%S} UTC",
        f"gateway: {report.gateway_url}",
        "",
    ]
    width = max(len(name) for name in report.checks)
    for name, check in report.checks.items():
        latency = f" ({check.latency_ms:g} ms)" if check.latency_ms is not None else ""
        label = name.replace("_", " ")
        lines.append(f"  {check.status.upper():<7} {label:<{width}}  {check.detail}{latency}")
    lines.append("")
    lines.append("status: OK" if report.status == "ok" else f"status: DOWN ({', '.join(report.down)})")
    return "\n".join(lines) + "\n"
