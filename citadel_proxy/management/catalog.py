"""What the YAML says about models (`ollama.models`, `model_routing`) set beside what Ollama has."""

from __future__ import annotations

from collections import defaultdict

from citadel_proxy.config.schema import Config
from citadel_proxy.management.names import canonical
from citadel_proxy.management.wire import (
    ConfiguredAlias,
    ConfiguredList,
    ConfiguredModel,
    InstalledList,
    InstalledModel,
    TagModel,
)


def aliases_by_target(config: Config) -> dict[str, list[str]]:
    """Canonical target name -> the aliases clients may use for it."""
    found: dict[str, list[str]] = defaultdict(list)
    for alias, target in sorted(config.model_routing.aliases.items()):
        found[canonical(target)].append(alias)
    return found


def installed(
    config: Config,
    models: list[TagModel],
    where: dict[str, list[str]] | None = None,
    backend_errors: dict[str, str] | None = None,
) -> InstalledList:
    """`where`: canonical name -> the backends that have it."""
    entries = {canonical(m.name): m for m in config.ollama.models}
    valid = {canonical(name) for name in config.model_routing.valid_models}
    aliases = aliases_by_target(config)
    rows = []
    for model in models:
        key = canonical(model.name)
        entry = entries.get(key)
        rows.append(
            InstalledModel(
                name=model.name,
                model=model.model or model.name,
                modified_at=model.modified_at,
                size=model.size,
                digest=model.digest,
                details=model.details,
                configured=entry is not None or key in valid,
                active=entry.active if entry is not None else None,
                aliases=aliases.get(key, []),
                backends=(where or {}).get(key, []),
            )
        )
    return InstalledList(models=rows, count=len(rows), backend_errors=backend_errors or {})


def configured(config: Config, models: list[TagModel] | None, ollama_error: str | None) -> ConfiguredList:
    """`models` None: Ollama could not be asked, so presence is unknown (null), not false."""
    present = {canonical(m.name) for m in models} if models is not None else None

    def is_present(name: str) -> bool | None:
        return canonical(name) in present if present is not None else None

    aliases = aliases_by_target(config)
    rows = [
        ConfiguredModel(
            name=entry.name,
            description=entry.description,
            quantization=entry.quantization,
            active=entry.active,
            present=is_present(entry.name),
            aliases=aliases.get(canonical(entry.name), []),
        )
        for entry in config.ollama.models
    ]
    alias_rows = [
        ConfiguredAlias(alias=alias, target=target, present=is_present(target))
        for alias, target in sorted(config.model_routing.aliases.items())
    ]
    return ConfiguredList(
        models=rows,
        aliases=alias_rows,
        valid_models=list(config.model_routing.valid_models),
        ollama_error=ollama_error,
    )
