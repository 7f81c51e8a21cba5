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

# A config or pipeline file holds hundreds of values. Aliases can make a few lines stand for billions
# (the "billion laughs" file), which would take minutes and gigabytes to expand: refuse past this many.
MAX_VALUES = 100_000
# A substituted value this short is only hidden where it is the value an error is about; hiding it
# everywhere in a message would also mangle numbers and words that merely contain it.
_MIN_SCRUBBED = 4


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
    # Key paths whose value came (in whole or in part) from ${VAR}, and what was substituted: secrets
    # are passed this way, so error messages name the variable and never show its value.
    substituted: dict[Path_, dict[str, str]] = field(default_factory=dict)
    values_seen: int = 0

    def line_of(self, path: Path_) -> int | None:
        # An error about a missing key inside a mapping is reported at the mapping's own line.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def error(self, path: Path_, message: str) -> YamlSourceError:
        return YamlSourceError(self.file, self.line_of(path), path, self.scrub(message))

    def from_environment(self, path: Path_) -> str | None:
        """`${NAME}` when the value at `path` came from an environment variable, else None."""
        names = self.substituted.get(path)
        return ", ".join(f"${{{name}}}" for name in names) if names else None

    def scrub(self, message: str) -> str:
        """`message` with every substituted value replaced by the variable's name."""
        for names in self.substituted.values():
            for name, value in names.items():
                if len(value) >= _MIN_SCRUBBED:
                    message = message.replace(value, f"${{{name}}}")
        return message


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
    source.values_seen += 1
    if source.values_seen > MAX_VALUES:
        raise source.error(
            path, f"the file expands to more than {MAX_VALUES:,} values (nested aliases?); refused"
        )
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
        if found is None and default is None:
            raise source.error(path, f"environment variable {name} is not set")
        value = str(found) if found is not None else str(default)
        source.substituted.setdefault(path, {})[name] = value
        return value

    return _ENV_REF.sub(substitute, value)
