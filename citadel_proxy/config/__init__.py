"""Configuration: YAML files loaded into frozen msgspec structs, with errors that name file and line."""

from citadel_proxy.config.loader import (
    ConfigError,
    add_config_option,
    chosen_config,
    config_path,
    load_config,
    load_struct,
)
from citadel_proxy.config.schema import Config

__all__ = [
    "Config",
    "ConfigError",
    "add_config_option",
    "chosen_config",
    "config_path",
    "load_config",
    "load_struct",
]
