"""Ollama's model-management answers (ollama-protocol.md section 6) and the shapes we answer with."""

from __future__ import annotations

from typing import Any

import msgspec

from citadel_proxy.errors import ErrorBody


class ModelDetails(msgspec.Struct, frozen=True):
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    parent_model: str = ""


class TagModel(msgspec.Struct, frozen=True):
    """One model of `/api/tags`."""

    name: str
    model: str = ""
    modified_at: str = ""
    size: int = 0
    digest: str = ""
    details: ModelDetails = msgspec.field(default_factory=ModelDetails)


class Tags(msgspec.Struct, frozen=True):
    models: list[TagModel] | None = None


class RunningModel(msgspec.Struct, frozen=True):
    """One model of `/api/ps`: `size` is its whole memory, `size_vram` the part on GPUs."""

    name: str
    model: str = ""
    size: int = 0
    size_vram: int = 0
    digest: str = ""
    details: ModelDetails = msgspec.field(default_factory=ModelDetails)
    expires_at: str = ""
    context_length: int = 0


class Running(msgspec.Struct, frozen=True):
    models: list[RunningModel] | None = None


class Show(msgspec.Struct, frozen=True):
    """`/api/show` without `verbose` (the modelfile is left out: it repeats the other fields)."""

    parameters: str = ""
    template: str = ""
    system: str = ""
    license: str = ""
    details: ModelDetails = msgspec.field(default_factory=ModelDetails)
    model_info: dict[str, Any] | None = None
    capabilities: list[str] | None = None
    modified_at: str = ""


class Version(msgspec.Struct, frozen=True):
    version: str = ""


class PullLine(msgspec.Struct, frozen=True):
    """One line of an `/api/pull` stream; an `error` line ends it (with HTTP 200 already sent)."""

    status: str = ""
    digest: str = ""
    total: int = 0
    completed: int = 0
    error: str | None = None


class ModelRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of `POST /management/models/pull` and `.../delete`."""

    model: str
    # One backend of ollama.backends by name; None: every backend.
    backend: str | None = None


# -- our answers


class InstalledModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    configured: bool
    active: bool | None
    aliases: list[str]
    # The backends that have it installed (`default` for ollama.service).
    backends: list[str] = msgspec.field(default_factory=list)


class InstalledList(msgspec.Struct, frozen=True, kw_only=True):
    models: list[InstalledModel]
    count: int
    # Backends that could not be asked, with why (their models are missing from the list).
    backend_errors: dict[str, str] = msgspec.field(default_factory=dict)


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    capabilities: list[str]
    details: ModelDetails
    parameters: str
    template: str
    system: str
    license: str
    modified_at: str
    model_info: dict[str, Any]


class ConfiguredModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    quantization: str
    active: bool
    # None when Ollama could not be asked (see `ollama_error`).
    present: bool | None
    aliases: list[str]


class ConfiguredAlias(msgspec.Struct, frozen=True, kw_only=True):
    alias: str
    target: str
    present: bool | None


class ConfiguredList(msgspec.Struct, frozen=True, kw_only=True):
    models: list[ConfiguredModel]
    aliases: list[ConfiguredAlias]
    valid_models: list[str]
    ollama_error: str | None


class LoadedModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    size: int
    size_vram: int
    # As `ollama ps` prints it: "100% GPU", "100% CPU" or "40%/60% CPU/GPU".
    processor: str
    context_length: int
    expires_at: str
    details: ModelDetails


class LoadedList(msgspec.Struct, frozen=True, kw_only=True):
    models: list[LoadedModel]
    count: int


class OllamaStatus(msgspec.Struct, frozen=True, kw_only=True):
    reachable: bool
    base_url: str
    version: str | None
    latency_ms: float | None
    loaded_models: list[LoadedModel]
    error: str | None
    # With ollama.backends: each backend's own status (the fields above are the first reachable one's).
    backends: dict[str, OllamaStatus] | None = None


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    deleted: bool = True


class DeletedOn(Deleted, frozen=True, kw_only=True):
    """With several backends: where the model was deleted."""

    backends: list[str]


class PullEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One NDJSON line of `POST /management/models/pull`.

    `status` is Ollama's (`pulling manifest`, `pulling <digest>`, ..., `success`), or `error` with an
    OpenAI error object in `error`. `percent` is `completed / total` of the layer being pulled.
    """

    model: str
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    percent: float | None = None
    error: ErrorBody | None = None
    backend: str | None = None  # with several backends: whose pull this line is about
