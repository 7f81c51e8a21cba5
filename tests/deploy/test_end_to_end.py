"""Real nginx (the shipped site) in front of a real gateway process and a fake Ollama, checked over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from citadel_proxy.auth.keys import generate_key, hash_key
from citadel_proxy.config.schema import Gateway
from tests.core.conftest import free_port
from tests.deploy.harness import (
    NGINX_SITE,
    REPO,
    Certificate,
    NginxLayout,
    nginx_command,
    running,
    venv_script,
    write_nginx,
)

TOKENS = 30
TOKEN_DELAY_S = 0.1
# The fake writes its last token this long after the gateway's request reached it, at the earliest.
LAST_TOKEN_AFTER_S = (TOKENS - 1) * TOKEN_DELAY_S
# Linux routes all of 127.0.0.0/8 to loopback; 127.0.0.2 is outside the site's allow lists.
OUTSIDE_ADDRESS = "127.0.0.2"
BODY_LIMIT = Gateway().max_body_bytes
KEY = generate_key()


@dataclass(frozen=True)
class Stack:
    layout: NginxLayout

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.layout.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.layout.http_port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.layout.certificate.cert))

    def client(self, local_address: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(verify=self.tls(), local_address=local_address)
        headers = {"Authorization": f"Bearer {KEY}"}
        return httpx.AsyncClient(transport=transport, timeout=30.0, headers=headers)


def _gateway_config(root: Path, ollama_port: int) -> Path:
    config = root / "citadel.yaml"
    config.write_text(
        f"ollama: {{service: {{host: 127.0.0.1, port: {ollama_port}}}, models: [{{name: 'phi3:latest'}}]}}\n"
        "model_routing: {aliases: {phi3: 'phi3:latest'}}\n"
        f"paths: {{pipelines: '{REPO / 'pipelines'}', data: '{root / 'data'}', logs: '{root / 'log'}',"
        f" backups: '{root / 'backups'}'}}\n"
        f"auth: {{keys: [{{name: deploy, sha256: {hash_key(KEY).hex()}, scopes: [inference, admin]}}]}}\n"
    )
    return config


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate, nginx_bin: str
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deploy")
    ollama_port, gateway_port = free_port(), free_port()
    layout = NginxLayout(root / "nginx", free_port(), free_port(), gateway_port, certificate)
    write_nginx(layout, NGINX_SITE.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "PROMETHEUS_MULTIPROC"))}
    fake = [sys.executable, "-m", "tests.fakes.ollama", "--port", str(ollama_port)]
    fake += ["--tokens", str(TOKENS), "--token-delay-ms", str(TOKEN_DELAY_S * 1000)]
    gateway = [venv_script("citadel-proxy"), "serve", "--config", str(_gateway_config(root, ollama_port))]
    gateway += ["--bind", f"127.0.0.1:{gateway_port}"]
    with contextlib.ExitStack() as processes:
        processes.enter_context(
            running(fake, root / "ollama.log", "fake Ollama", ollama_port, cwd=REPO, env=env)
        )
        processes.enter_context(
            running(gateway, root / "gateway.log", "citadel-proxy", gateway_port, env=env)
        )
        nginx = nginx_command(nginx_bin, layout, "-g", "daemon off;")
        processes.enter_context(running(nginx, root / "nginx.log", "nginx", layout.https_port))
        yield Stack(layout)


def _chat(stream: bool) -> dict[str, object]:
    return {"model": "phi3", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_sse_stream_reaches_the_client_while_ollama_still_generates(stack: Stack) -> None:
    events: list[str] = []
    first_event_after_s = math.inf
    async with stack.client() as client:
        sent = time.monotonic()
        request = client.stream("POST", f"{stack.https}/v1/voice/chat/completions", json=_chat(True))
        async with request as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    if not events:
                        first_event_after_s = time.monotonic() - sent
                    events.append(line.removeprefix("data: "))
    assert events and events[-1] == "[DONE]", events
    content = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert content == "".join(f"w{i} " for i in range(TOKENS))
    # Seen before the fake could have written its last token: nginx forwarded the stream as it came.
    assert first_event_after_s < LAST_TOKEN_AFTER_S


async def test_plain_http_redirects_to_https(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{stack.http}/v1/chat/completions?x=1", json=_chat(False))
    assert response.status_code == 308
    # $host has no port: in production HTTPS is on 443.
    assert response.headers["location"] == "https://127.0.0.1/v1/chat/completions?x=1"


async def test_a_body_over_the_limit_is_refused_by_nginx(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post(
            f"{stack.https}/v1/chat/completions",
            content=b"{" + b" " * (BODY_LIMIT - 1) + b"}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_body_at_the_limit_reaches_the_gateway(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post(
            f"{stack.https}/v1/chat/completions",
            content=b"{" + b" " * (BODY_LIMIT - 2) + b"}",
            headers={"content-type": "application/json"},
        )
    # The gateway's own answer to `{}`: no model. nginx's limit is not below the gateway's.
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/management/models/list", "/metrics"])
async def test_internal_endpoints_are_refused_from_outside(stack: Stack, path: str) -> None:
    async with stack.client(local_address=OUTSIDE_ADDRESS) as client:
        outside = await client.get(f"{stack.https}{path}")
    async with stack.client() as client:
        inside = await client.get(f"{stack.https}{path}")
    assert outside.status_code == 403
    assert outside.json()["error"]["code"] == "forbidden_network"
    # From 127.0.0.1 the gateway answers, whatever it has to say about this path.
    assert inside.status_code != 403 or inside.json()["error"]["code"] != "forbidden_network"


async def test_public_routes_are_open_from_outside(stack: Stack) -> None:
    async with stack.client(local_address=OUTSIDE_ADDRESS) as client:
        response = await client.post(f"{stack.https}/v1/chat/completions", json=_chat(False))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(f"w{i} " for i in range(TOKENS))


async def test_request_id_goes_through_both_ways(stack: Stack) -> None:
    async with stack.client() as client:
        given = await client.get(f"{stack.https}/health", headers={"X-Request-ID": "deploy-test-42"})
        minted = await client.get(f"{stack.https}/health")
    assert given.headers.get("x-request-id") == "deploy-test-42"
    # Without one, nginx mints it ($request_id: 32 hex digits) and the gateway uses that same id.
    assert re.fullmatch(r"[0-9a-f]{32}", minted.headers.get("x-request-id", ""))
    wanted = ["rid=deploy-test-42 ", f"rid={minted.headers['x-request-id']} "]
    log = stack.layout.logs / "citadel-proxy.access.log"
    # nginx writes its access line in the log phase, which may come just after the client has the answer.
    for _ in range(100):
        access_log = log.read_text()
        if all(w in access_log for w in wanted):
            break
        await asyncio.sleep(0.02)
    assert all(w in access_log for w in wanted), access_log[-2000:]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_offers_modern_versions_with_forward_secrecy(stack: Stack, version: ssl.TLSVersion) -> None:
    context = stack.tls()
    context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", stack.layout.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cipher, protocol, _ = tls.cipher()
    assert protocol == version.name.replace("v1_", "v1.")
    if version is ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)


def _handshake_error(stack: Stack, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", stack.layout.https_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    return str(refused.value)


def test_tls_1_1_is_refused_by_the_server(stack: Stack) -> None:
    context = stack.tls()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point is to offer it
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    # nginx's alert, not our own OpenSSL declining to offer TLS 1.1.
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in _handshake_error(stack, context)


def test_tls_1_2_without_aead_is_refused_by_the_server(stack: Stack) -> None:
    context = stack.tls()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    # Forward secret and usable with the ECDSA certificate, but CBC: nginx's default list would take it.
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    assert "HANDSHAKE_FAILURE" in _handshake_error(stack, context)
