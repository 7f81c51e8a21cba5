"""Turns YAML files into typed structs; every mistake is reported as `file:line: key.path: problem`."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from citadel_proxy.config.schema import Config
from citadel_proxy.config.yamlsource import Path_, YamlSource, YamlSourceError, read_yaml

T = TypeVar("T")

ConfigError = YamlSourceError

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rest>.*)")
_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing (null)",
}


DEFAULT_CONFIG = "conf/citadel.yaml"


def config_path(explicit: str | None = None) -> Path:
    """The config file to read: the one named, else $CITADEL_CONFIG, else conf/citadel.yaml."""
    return Path(explicit or os.environ.get("CITADEL_CONFIG") or DEFAULT_CONFIG)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` on a command line parser; read it back with `config_path(chosen_config(args))`.

    Every parser of the command line gets it, so it may stand before or after any subcommand. Its
    default is SUPPRESS, so a subcommand's parser never overwrites what an outer one has read.
    """
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"config file (default: $CITADEL_CONFIG, else {DEFAULT_CONFIG})",
    )


def chosen_config(args: argparse.Namespace) -> str | None:
    chosen: str | None = getattr(args, "config", None)
    return chosen


def load_config(path: Path) -> Config:
    """Load the gateway's main file; relative paths inside it stay relative to the file's folder."""
    config = load_struct(read_yaml(path), Config)
    return config.resolved(path.parent)


def load_struct(source: YamlSource, kind: type[T], *, at: Path_ = (), data: Any = None) -> T:
    """Convert `data` (default: the whole file) found at key path `at` into `kind`."""
    value = source.data if data is None else data
    try:
        return msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise _located(source, at, str(exc), value, kind) from None


def _located(source: YamlSource, at: Path_, text: str, data: Any, kind: type) -> YamlSourceError:
    found = _AT.match(text)
    assert found is not None  # the pattern matches any string
    message = found.group("msg")
    rel: list[str | int] = [
        int(index) if index else name for name, index in _PART.findall(found.group("path") or "")
    ]
    if unknown := _UNKNOWN.match(message):
        allowed = _field_names(kind, rel)
        rel.append(unknown.group("name"))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return source.error((*at, *rel), f"unknown key{hint}")
    if missing := _MISSING.match(message):
        rel.append(missing.group("name"))
        return source.error((*at, *rel), "required key is missing")
    if expected := _EXPECTED.match(message):
        shown = source.from_environment((*at, *rel)) or _show(_value_at(data, rel))
        return source.error((*at, *rel), _expected_message(expected, shown))
    return source.error((*at, *rel), message[:1].lower() + message[1:])


def _expected_message(match: re.Match[str], shown: str) -> str:
    want = " or ".join(_TYPE_WORDS.get(part.strip(), part.strip()) for part in match.group("want").split("|"))
    rest = match.group("rest").strip()
    if match.group("got") is None:
        return f"expected {want} {rest}, got {shown}".replace("  ", " ")
    return f"expected {want}, got {shown}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value_at(data: Any, path: list[str | int]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _field_names(kind: Any, path: list[str | int]) -> list[str]:
    """Names a mapping at `path` may hold, found by walking the struct types."""
    info: Any = msgspec.inspect.type_info(kind)
    for part in path:
        info = _unwrap(info)
        if isinstance(part, int) and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(part, str) and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == part), None)
        elif isinstance(part, str) and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return []
    info = _unwrap(info)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.encode_name for f in info.fields]
    return []


def _unwrap(info: Any) -> Any:
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return structs[0] if len(structs) == 1 else info
    return info
