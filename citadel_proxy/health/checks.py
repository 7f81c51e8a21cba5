"""The checks of `citadel-proxy health`, each returning a `Check` and never raising.

The gateway and Ollama are asked through the gateway's own endpoints (what clients depend on); the
database, Redis, resources and log file are looked at directly, as the specification's script did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
import psutil

from citadel_proxy.config.schema import Config
from citadel_proxy.health.probes import ProbeFailed, elapsed_ms, probe_database, probe_redis

Status = Literal["ok", "warn", "down", "skipped"]
# Above this a resource is reported as a warning: a full disk stops model pulls and logging.
_FULL_PERCENT = 90.0
_CONNECT_TIMEOUT_S = 5.0


class Check(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: Status
    detail: str
    latency_ms: float | None = None
    data: dict[str, Any] | None = None


async def _get(session: aiohttp.ClientSession, url: str, key: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with session.get(url, headers=headers) as response:
        raw = await response.read()
    try:
        return response.status, msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return response.status, None


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return ""


async def gateway(session: aiohttp.ClientSession, base: str, key: str | None = None) -> Check:
    """With an admin key /health names why a component is down; without one, only that it is."""
    started = time.perf_counter()
    try:
        status, body = await _get(session, f"{base}/health", key)
        if status == 401 and key is not None:
            # A stale admin key says nothing about the gateway's health: ask as the public does.
            status, body = await _get(session, f"{base}/health", None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(status="down", detail=f"no answer from {base}/health: {exc!r}")
    if status == 200:
        return Check(status="ok", detail="/health answered 200", latency_ms=elapsed_ms(started))
    detail = f"/health answered {status}"
    checks = body.get("checks") if isinstance(body, dict) else None
    if isinstance(checks, dict):
        failing = [
            f"{name}: {c.get('detail', c.get('status'))}"
            for name, c in checks.items()
            if isinstance(c, dict) and c.get("status") != "ok"
        ]
        detail += f" ({'; '.join(failing)})" if failing else ""
    return Check(status="down", detail=detail, latency_ms=elapsed_ms(started))


async def _management(
    session: aiohttp.ClientSession, base: str, path: str, key: str | None
) -> tuple[Check | None, Any]:
    """The endpoint's JSON body, or the Check that says why there is none."""
    if key is None:
        return Check(status="skipped", detail="no admin key (--key-file, CITADEL_API_KEY or admin.key)"), None
    try:
        status, body = await _get(session, f"{base}{path}", key)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(status="down", detail=f"no answer from {path}: {exc!r}"), None
    if status != 200:
        return Check(status="down", detail=f"{path} answered {status}: {_error_text(body)}"), None
    if not isinstance(body, dict):
        return Check(status="down", detail=f"{path} did not answer with a JSON object"), None
    return None, body


async def ollama(session: aiohttp.ClientSession, base: str, key: str | None) -> Check:
    failed, body = await _management(session, base, "/management/system/ollama-status", key)
    if failed is not None:
        return failed
    loaded = [m.get("name") for m in body.get("loaded_models", [])]
    data = {"base_url": body.get("base_url"), "version": body.get("version"), "loaded_models": loaded}
    if not body.get("reachable"):
        return Check(status="down", detail=f"unreachable: {body.get('error')}", data=data)
    detail = f"version {body.get('version')} at {body.get('base_url')}, {len(loaded)} loaded"
    return Check(status="ok", detail=detail, latency_ms=body.get("latency_ms"), data=data)


async def models(session: aiohttp.ClientSession, base: str, key: str | None) -> Check:
    failed, body = await _management(session, base, "/management/models/list", key)
    if failed is not None:
        return failed
    rows = body.get("models", [])
    configured = sum(1 for m in rows if m.get("configured"))
    detail = f"{len(rows)} installed, {configured} of them configured"
    return Check(status="ok", detail=detail, data={"count": len(rows), "configured": configured})


async def _probed(probe: Awaitable[float], detail: str) -> Check:
    try:
        latency = await probe
    except ProbeFailed as exc:
        return Check(status="down", detail=str(exc))
    return Check(status="ok", detail=detail, latency_ms=latency)


async def database(config: Config) -> Check:
    db = config.database
    if db is None:
        return Check(status="skipped", detail="not configured")
    probe = probe_database(db, _CONNECT_TIMEOUT_S)
    return await _probed(probe, f"SELECT 1 on {db.host}:{db.port}/{db.database}")


async def redis(config: Config) -> Check:
    settings = config.redis
    if settings is None:
        return Check(status="skipped", detail="not configured")
    return await _probed(
        probe_redis(settings, _CONNECT_TIMEOUT_S), f"PING on {settings.host}:{settings.port}"
    )


def _resources(paths: list[str]) -> Check:
    cpu = psutil.cpu_percent(interval=0.3)
    memory = psutil.virtual_memory().percent
    disks: dict[str, float] = {}
    for path in paths:
        if Path(path).exists():
            disks[path] = psutil.disk_usage(path).percent
    data = {"cpu_percent": cpu, "memory_percent": memory, "disk_percent": disks}
    full = [name for name, value in (("memory", memory), *disks.items()) if value >= _FULL_PERCENT]
    disk_text = ", ".join(f"disk {p} {v:.0f}%" for p, v in disks.items())
    detail = f"CPU {cpu:.0f}%, memory {memory:.0f}%, {disk_text}"
    if full:
        return Check(status="warn", detail=f"{detail}; over {_FULL_PERCENT:g}%: {', '.join(full)}", data=data)
    return Check(status="ok", detail=detail, data=data)


async def resources(config: Config) -> Check:
    """psutil blocks (the CPU sample waits), so it runs off the event loop."""
    paths = list(dict.fromkeys(["/", config.paths.data, config.paths.logs]))
    return await asyncio.to_thread(_resources, paths)
