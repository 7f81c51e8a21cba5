"""The pipeline's request and reply are our own types: nothing between the routes and the backend imports
a wire format (protocol modules translate at one edge, backend modules at the other)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "citadel_proxy"
# What sits between a route's decoding and the backend's call.
BETWEEN = ("pipeline", "stages", "cache", "audit", "ratelimit", "observability")
WIRE = (
    "citadel_proxy.openai.wire",
    "citadel_proxy.openai.translate",
    "citadel_proxy.embeddings.wire",
    "citadel_proxy.upstream.wire",
    "citadel_proxy.upstream.translate",
    # The other client protocols (Ollama's own API, Anthropic's Messages, OpenAI's Responses).
    "citadel_proxy.ollama_native",
    "citadel_proxy.anthropic",
    "citadel_proxy.openai_responses",
)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("folder", BETWEEN)
def test_no_stage_or_service_between_the_edges_imports_a_wire_format(folder: str) -> None:
    offending = {
        str(path.relative_to(PACKAGE)): sorted(name for name in imported(path) if name.startswith(WIRE))
        for path in sorted((PACKAGE / folder).rglob("*.py"))
    }
    assert {path: names for path, names in offending.items() if names} == {}
