"""Fixtures of the deployment tests: the test certificate, made once by the shipped script."""

from __future__ import annotations

import pytest

from tests.deploy.harness import Certificate, make_certificate, require_tool


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    require_tool("openssl", "openssl")
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return require_tool("nginx", "nginx")
