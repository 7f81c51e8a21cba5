"""Model names as Ollama accepts them, `[host/][namespace/]model[:tag]`, checked before Ollama is asked.

The character rules are Ollama's (`types/model/name.go`): every part starts with a letter, digit or
underscore; a host may hold `.`, `-` and `:` (a port); a namespace `-`; a model and a tag `.` and `-`.
Anything else (spaces, `..`, a leading `/`, a digest, URL tricks) is refused with a 400.

A host part makes Ollama connect to that host (a pull fetches `https://HOST/v2/...`), so an admin key
could point it at any address Ollama reaches (`127.0.0.1:6379/ns/m`, `169.254.169.254/latest/meta-data`):
only Ollama's own registry and the hosts listed in `ollama.registries` are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from citadel_proxy import errors

_PART = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
# Parts are named from the right, as Ollama does: `a/b` is namespace/model, `a/b/c` host/namespace/model.
_PREFIXES = {1: (), 2: ("namespace",), 3: ("host", "namespace")}
DEFAULT_REGISTRY = "registry.ollama.ai"
_DEFAULT_PREFIXES = (f"{DEFAULT_REGISTRY}/library/", "library/")
MAX_NAME_CHARS = 512


def is_valid(name: str) -> bool:
    parts = name.split("/")
    kinds = _PREFIXES.get(len(parts))
    if kinds is None or len(name) > MAX_NAME_CHARS or ".." in name:
        return False
    model, colon, tag = parts[-1].partition(":")
    named = [*zip(kinds, parts[:-1], strict=True), ("model", model)] + ([("tag", tag)] if colon else [])
    return all(_PART[kind].fullmatch(text) for kind, text in named)


def is_valid_host(host: str) -> bool:
    return _PART["host"].fullmatch(host) is not None


def registry_of(name: str) -> str:
    """The registry host Ollama would contact for `name` (lower case)."""
    parts = name.split("/")
    return parts[0].lower() if len(parts) == 3 else DEFAULT_REGISTRY


def validate_name(name: str, param: str = "model", registries: Collection[str] | None = None) -> str:
    """`name` unchanged when Ollama would accept it and, when `registries` is given, its host is
    Ollama's registry or one of them; otherwise a 400 naming the field."""
    if not is_valid(name):
        raise errors.InvalidRequest(
            f"invalid model name {name[:100]!r}: expected [host/][namespace/]model[:tag], "
            "letters, digits, '_', '-' and '.' only",
            param=param,
        )
    host = registry_of(name)
    if registries is not None and host != DEFAULT_REGISTRY and host not in {r.lower() for r in registries}:
        raise errors.InvalidRequest(
            f"registry host {host!r} is not allowed: only {DEFAULT_REGISTRY} and the hosts listed in "
            "ollama.registries",
            param=param,
            code="registry_not_allowed",
        )
    return name


def canonical(name: str) -> str:
    """The form Ollama compares names in: lower case, default registry dropped, `:latest` implied."""
    name = name.strip().lower()
    for prefix in _DEFAULT_PREFIXES:
        name = name.removeprefix(prefix)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
