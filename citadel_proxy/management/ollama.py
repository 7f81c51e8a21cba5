"""Ollama's model-management calls, typed, with short timeouts and clear errors for unknown models."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from citadel_proxy import errors
from citadel_proxy.management.wire import (
    LoadedModel,
    Running,
    RunningModel,
    Show,
    TagModel,
    Tags,
    Version,
)
from citadel_proxy.upstream.client import OllamaClient

T = TypeVar("T")

# Listing, showing and deleting are quick for Ollama; a management call should not hang for an hour.
MANAGEMENT_TIMEOUT_S = 10.0
_encode = msgspec.json.Encoder().encode


def _decode(raw: bytes, kind: type[T], what: str) -> T:
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.UpstreamMalformed(f"Ollama's {what} answer is not what we expected: {exc}") from None


async def tags(client: OllamaClient, timeout_s: float = MANAGEMENT_TIMEOUT_S) -> list[TagModel]:
    raw = await client.fetch("GET", "/api/tags", total_s=timeout_s)
    return _decode(raw, Tags, "/api/tags").models or []


async def running(client: OllamaClient, timeout_s: float = MANAGEMENT_TIMEOUT_S) -> list[RunningModel]:
    raw = await client.fetch("GET", "/api/ps", total_s=timeout_s)
    return _decode(raw, Running, "/api/ps").models or []


async def version(client: OllamaClient, timeout_s: float = MANAGEMENT_TIMEOUT_S) -> str:
    raw = await client.fetch("GET", "/api/version", total_s=timeout_s)
    return _decode(raw, Version, "/api/version").version


async def show(client: OllamaClient, name: str) -> Show:
    body = _encode({"model": name, "verbose": False})
    try:
        raw = await client.fetch("POST", "/api/show", body, total_s=MANAGEMENT_TIMEOUT_S)
    except errors.ModelNotFound:
        raise not_installed(name) from None
    return _decode(raw, Show, "/api/show")


async def delete(client: OllamaClient, name: str) -> None:
    """DELETE with a JSON body; Ollama answers 200 with an empty body."""
    try:
        await client.fetch("DELETE", "/api/delete", _encode({"model": name}), total_s=MANAGEMENT_TIMEOUT_S)
    except errors.ModelNotFound:
        raise not_installed(name) from None


def not_installed(name: str) -> errors.ModelNotFound:
    return errors.ModelNotFound(
        f"model '{name}' is not installed in Ollama (GET /management/models/list lists the installed ones)",
        param="model",
    )


def loaded(model: RunningModel) -> LoadedModel:
    return LoadedModel(
        name=model.name,
        size=model.size,
        size_vram=model.size_vram,
        processor=processor(model.size, model.size_vram),
        context_length=model.context_length,
        expires_at=model.expires_at,
        details=model.details,
    )


def processor(size: int, size_vram: int) -> str:
    if size <= 0 or size_vram <= 0:
        return "100% CPU"
    if size_vram >= size:
        return "100% GPU"
    gpu = round(size_vram * 100 / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def model_facts(show_reply: Show) -> tuple[str | None, int | None, int | None]:
    """Architecture, context length and parameter count from `model_info` (protocol notes 6.2)."""
    info = show_reply.model_info or {}
    architecture = info.get("general.architecture")
    parameters = _int(info.get("general.parameter_count"))
    if not isinstance(architecture, str):
        return None, None, parameters
    return architecture, _int(info.get(f"{architecture}.context_length")), parameters


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
