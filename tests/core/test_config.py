"""The config loader: typed structs, and errors that name file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel_proxy.config import ConfigError, load_config
from citadel_proxy.config.models import ModelRouter
from citadel_proxy.errors import ModelNotFound

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "citadel.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "conf" / "citadel.yaml")
    assert config.gateway.port == 8002
    assert config.database is None and config.redis is None
    assert Path(config.paths.pipelines) == REPO / "pipelines"


def test_specification_production_yaml_loads_as_is(tmp_path: Path) -> None:
    spec = """
project: {name: "citadel-llm-gateway", environment: "production", version: "2.0.0", log_level: "INFO",
          debug: false}
database:
  host: "localhost"
  port: 5432
  database: "citadel_llm_db"
  user: "citadel_llm_user"
  password: "${DB_PASSWORD}"
  pool_size: 20
  max_overflow: 30
  pool_timeout: 30
  pool_recycle: 3600
  ssl_mode: "prefer"
redis: {host: "localhost", port: 6379, database: 0, max_connections: 50, socket_timeout: 5,
        socket_connect_timeout: 5, password: null}
ollama:
  service: {host: "localhost", port: 11434, timeout: 3600, max_retries: 3}
  models:
    - {name: "phi3:latest", quantization: "Q4_0", description: "Lightweight", active: true}
gateway:
  host: "0.0.0.0"
  port: 8002
  workers: 4
  timeout: 3600
  cors: {enabled: true, origins: ["*"], methods: ["*"], headers: ["*"]}
monitoring:
  prometheus: {enabled: true, port: 9090}
  health_checks: {enabled: true, interval: 30}
  logging: {level: "INFO", format: "json", file: "/opt/citadel/logs/gateway/gateway.log", max_size: "100MB",
            backup_count: 10}
"""
    path = write(tmp_path, spec)
    import os

    os.environ["DB_PASSWORD"] = "from-env"
    try:
        config = load_config(path)
    finally:
        del os.environ["DB_PASSWORD"]
    assert config.database is not None and config.database.password == "from-env"
    assert config.gateway.workers == 4


def test_wrong_type_names_file_line_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "project:\n  name: x\ngateway:\n  host: 0.0.0.0\n  port: 80a\n")
    assert error_of(path) == f'{path}:5: gateway.port: expected an integer, got "80a"'


def test_unknown_key_is_an_error_with_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  prot: 8002\n")
    message = error_of(path)
    assert message.startswith(f"{path}:2: gateway.prot: unknown key (allowed: host, port,")


def test_missing_required_key_in_a_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, "ollama:\n  models:\n    - name: a\n    - quantization: Q4\n")
    assert error_of(path) == f"{path}:4: ollama.models[1].name: required key is missing"


def test_wildcard_cors_with_credentials_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  cors:\n    origins: ['*']\n    allow_credentials: true\n")
    assert "gateway.cors: allow_credentials with origin '*'" in error_of(path)


def test_missing_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  password: ${CITADEL_SURELY_UNSET_VAR}\n")
    assert (
        error_of(path)
        == f"{path}:2: redis.password: environment variable CITADEL_SURELY_UNSET_VAR is not set"
    )


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  port: [8002\n")
    assert error_of(path).startswith(f"{path}:")


def test_model_router_aliases_configured_and_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ollama:\n  models:\n    - name: phi3:latest\n    - name: old:7b\n      active: false\n"
        "model_routing:\n  aliases: {fast: 'phi3:latest'}\n  valid_models: [openchat]\n",
    )
    router = ModelRouter.from_config(load_config(path))
    assert router.resolve("fast") == "phi3:latest"
    assert router.resolve("phi3") == "phi3:latest"
    assert router.resolve("phi3:latest") == "phi3:latest"
    assert router.resolve("openchat") == "openchat:latest"
    with pytest.raises(ModelNotFound, match="not active"):
        router.resolve("old:7b")
    with pytest.raises(ModelNotFound, match="not configured"):
        router.resolve("llama9")
