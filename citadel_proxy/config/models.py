"""Model routing: which names clients may ask for, and the Ollama model each one means."""

from __future__ import annotations

from dataclasses import dataclass, field

from citadel_proxy import errors
from citadel_proxy.config.schema import Config, ModelEntry


@dataclass(frozen=True, slots=True)
class ModelRouter:
    """Aliases first (`phi3` -> `phi3:latest`), then configured models, with `:latest` implied."""

    routes: dict[str, str]
    inactive: frozenset[str]
    # Models with runtime defaults in the config (num_ctx, keep_alive, options), by name.
    defaults: dict[str, ModelEntry] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> ModelRouter:
        active = {m.name for m in config.ollama.models if m.active}
        inactive = frozenset(m.name for m in config.ollama.models if not m.active)
        routes = {name: name for name in active}
        for name in config.model_routing.valid_models:
            routes.setdefault(name, name if ":" in name else f"{name}:latest")
        routes.update(config.model_routing.aliases)
        defaults = {
            m.name: m
            for m in config.ollama.models
            if m.num_ctx is not None or m.keep_alive is not None or m.options
        }
        return cls({k: v for k, v in routes.items() if v not in inactive}, inactive, defaults)

    def resolve(self, name: str) -> str:
        found = self.routes.get(name)
        if found is None and ":" not in name:
            found = self.routes.get(f"{name}:latest")
        if found is not None:
            return found
        if name in self.inactive or f"{name}:latest" in self.inactive:
            raise errors.ModelNotFound(f"model '{name}' is configured but not active", param="model")
        raise errors.ModelNotFound(
            f"model '{name}' is not configured on this gateway (GET /v1/models lists the models)",
            param="model",
        )
