"""The installed models: FakeModel, the default set and pullable names, and how Ollama describes a model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_REGISTRY = ("llama3.2:latest", "tinyllama:latest", "all-minilm:latest", "qwen2.5:0.5b")


@dataclass(frozen=True)
class FakeModel:
    """An installed model. `capabilities` gates tools/insert/thinking/chat exactly as Ollama does."""

    name: str
    capabilities: tuple[str, ...] = ("completion",)
    family: str = "llama"
    parameter_size: str = "3.8B"
    quantization_level: str = "Q4_K_M"
    context_length: int = 4096
    embedding_length: int = 768
    size: int = 2_176_178_913
    modified_at: datetime | None = None


def default_models() -> list[FakeModel]:
    """The models a FakeOllama has when none are given."""
    return [
        FakeModel("phi3:latest", family="phi3"),
        FakeModel("openchat:latest", parameter_size="7B"),
        FakeModel("qwen3:latest", ("completion", "tools", "thinking"), family="qwen3", parameter_size="8.2B"),
        FakeModel("codellama:code", ("completion", "insert"), parameter_size="7B"),
        FakeModel(
            "nomic-embed-text:latest",
            ("embedding",),
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            context_length=2048,
            size=274_302_450,
        ),
    ]


def details(model: FakeModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


def digest(model: FakeModel) -> str:
    return hashlib.sha256(model.name.encode()).hexdigest()


def parameter_count(size: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(size[-1:].upper(), 1.0)
    try:
        return int(float(size.rstrip("KMBTkmbt")) * scale)
    except ValueError:
        return 0
