"""Ollama's wire habits: Go-style JSON, times, names and durations, errors, embeddings, host/origin checks."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

_JSON = "application/json; charset=utf-8"
_NDJSON = "application/x-ndjson"
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOCAL_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
_APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_FOREVER = datetime(2318, 1, 1, tzinfo=UTC)


class ApiError(Exception):
    """An Ollama JSON error answer: status plus {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, UTF-8, with <, >, & and U+2028/9 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for raw, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, esc)
    return text


def created_at() -> str:
    """time.Now().UTC() in RFC 3339 with up to 9 fraction digits, trailing zeros trimmed (Go's format)."""
    ns = time.time_ns()
    base = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def local_time(when: datetime) -> str:
    """A time in the server's local offset, as Go prints modified_at / expires_at ("Z" when UTC)."""
    local = when.astimezone()
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{local.microsecond:06d}".rstrip("0")
    text += f".{frac}" if frac else ""
    offset = local.strftime("%z")
    return f"{text}Z" if offset in ("+0000", "") else f"{text}{offset[:3]}:{offset[3:]}"


def normalize_name(name: str) -> str:
    """Ollama's name matching: case-insensitive, default registry/namespace dropped, tag default latest."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        name = name.removeprefix(prefix)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about 4 bytes a token."""
    return max(1, math.ceil(len(text.encode()) / 4)) if text else 0


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds (negative: forever); None when absent. Strings are Go durations."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = type(value).__name__
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type api.Duration")
    if not isinstance(value, str):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    matches = list(_GO_DURATION.finditer(body))
    whole = "".join(m.group(0) for m in matches) == body
    if not body or not whole or any(m.group(1) in ("", ".") for m in matches):
        unit_missing = body.replace(".", "", 1).isdigit()
        raise ApiError(400, f'time: {"missing unit in" if unit_missing else "invalid"} duration "{value}"')
    return sign * sum(float(m.group(1)) * _UNIT_S[m.group(2)] for m in matches)


def embedding_vector(model: str, text: str, dimensions: int, *, normalize: bool = True) -> list[float]:
    """The fake's embedding of `text`: derived from sha256(model + text), L2-normalised like /api/embed."""
    seed = f"{normalize_name(model)}\x00{text}".encode()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    raw = raw[:dimensions]
    if not normalize:
        return [round(v, 8) for v in raw]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 8) for v in raw]


def host_allowed(host_header: str) -> bool:
    """Ollama's allowedHostsMiddleware for a loopback listener (section 11)."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.lower()
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(host)
        return addr.is_loopback or addr.is_private or addr.is_unspecified or addr.is_link_local
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    return host.endswith((".localhost", ".local", ".internal"))


def origin_allowed(origin: str, extra: Iterable[str] = ()) -> bool:
    """Ollama's CORS origin list: localhost/127.0.0.1/0.0.0.0 on any port, app schemes, OLLAMA_ORIGINS."""
    patterns = [
        f"{scheme}://{host}{port}"
        for host in _LOCAL_ORIGIN_HOSTS
        for scheme in ("http", "https")
        for port in ("", ":*")
    ]
    patterns += [*_APP_ORIGINS, *extra]
    return any(fnmatch.fnmatchcase(origin.lower(), p.lower()) for p in patterns)


def json_response(status: int, obj: Any) -> web.Response:
    return web.Response(status=status, body=go_json(obj).encode(), headers={"Content-Type": _JSON})


def text_response(status: int, text: str, content_type: str = "text/plain") -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": content_type})


def decode_body(raw: bytes, type_name: str) -> dict[str, Any]:
    """Decode a JSON object body with Ollama's (Go's) error messages."""
    if not raw.strip():
        raise ApiError(400, "missing request body")
    text = raw.decode(errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ApiError(400, "unexpected EOF") from None
        raise ApiError(400, f"invalid character '{text[exc.pos]}' looking for beginning of value") from None
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(obj), "number")
        raise ApiError(400, f"json: cannot unmarshal {kind} into Go value of type api.{type_name}")
    return obj


def request_stream(req: dict[str, Any]) -> bool:
    return req.get("stream") is not False
