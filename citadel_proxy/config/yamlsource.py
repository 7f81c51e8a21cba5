"""Reads a YAML file into plain Python data while remembering the line of every key path."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

Path_ = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class YamlSourceError(Exception):
    """A problem located in a file: str() is `file:line: key.path: what is wrong`."""

    def __init__(self, file: str, line: int | None, path: Path_, message: str) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line is not None else file
        dotted = format_path(path)
        super().__init__(f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}")


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(slots=True)
class YamlSource:
    """Plain data from one file, and the 1-based line where each key path was written."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        # An error about a missing key inside a mapping is reported at the mapping's own line.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def error(self, path: Path_, message: str) -> YamlSourceError:
        return YamlSourceError(self.file, self.line_of(path), path, message)


def read_yaml(path: Path, *, env: dict[str, str] | None = None) -> YamlSource:
    """Parse `path`; `${VAR}` and `${VAR:-default}` in strings are taken from the environment."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlSourceError(shown, None, (), f"cannot read: {exc.strerror or exc}") from exc
    yaml = YAML(typ="rt", pure=True)
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSourceError(shown, line, (), f"invalid YAML: {exc.problem}") from exc
    source = YamlSource(shown, None)
    source.data = _plain(tree, (), source, os.environ if env is None else env, 1)
    return source


def _plain(node: Any, path: Path_, source: YamlSource, env: Any, line: int) -> Any:
    source.lines.setdefault(path, line)
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            key_line = node.lc.key(key)[0] + 1
            child = (*path, str(key))
            source.lines[child] = key_line
            out[str(key)] = _plain(value, child, source, env, key_line)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            item_line = node.lc.item(index)[0] + 1
            items.append(_plain(value, (*path, index), source, env, item_line))
        return items
    if isinstance(node, str):
        return _expand_env(str(node), path, source, env)
    # ruamel's round-trip scalars are subclasses (ScalarFloat, ScalarInt) that strict conversion refuses.
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _expand_env(value: str, path: Path_, source: YamlSource, env: Any) -> str:
    if "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found is not None:
            return str(found)
        if default is not None:
            return default
        raise source.error(path, f"environment variable {name} is not set")

    return _ENV_REF.sub(substitute, value)
