"""The shipped nginx site passes `nginx -t`, and its limits agree with the gateway's own."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from citadel_proxy.config.schema import Gateway
from tests.deploy.harness import NGINX_SITE, Certificate, NginxLayout, nginx_command, write_nginx

# Debian's nginx 1.22 needs `listen ... http2`; newer ones accept it with this warning.
_TOLERATED_WARNINGS = ('the "listen ... http2" directive is deprecated',)


def _layout(root: Path, certificate: Certificate) -> NginxLayout:
    return NginxLayout(root, http_port=18080, https_port=18443, gateway_port=18002, certificate=certificate)


def _locations(text: str) -> dict[str, str]:
    """Location pattern -> body, for the flat (unnested) location blocks the site uses."""
    return {m[1].strip(): m[2] for m in re.finditer(r"^\s*location\s+([^{\n]+)\{([^}]*)\}", text, re.M)}


def test_make_cert_makes_a_certificate_for_the_names_given(certificate: Certificate) -> None:
    text = subprocess.run(
        ["openssl", "x509", "-in", str(certificate.cert), "-noout", "-ext", "subjectAltName"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:localhost" in text
    assert "IP Address:127.0.0.1" in text
    assert stat.S_IMODE(certificate.key.stat().st_mode) == 0o600


def test_nginx_accepts_the_shipped_site(tmp_path: Path, certificate: Certificate, nginx_bin: str) -> None:
    layout = _layout(tmp_path, certificate)
    write_nginx(layout, NGINX_SITE.read_text())
    result = subprocess.run(
        nginx_command(nginx_bin, layout, "-t"), capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [
        line
        for line in output.splitlines()
        if "[warn]" in line and not any(w in line for w in _TOLERATED_WARNINGS)
    ]
    # e.g. "conflicting server name" when two servers claim the same port and names.
    assert warnings == [], output


def test_body_limit_is_the_gateways() -> None:
    match = re.search(r"^\s*client_max_body_size\s+(\d+)m;", NGINX_SITE.read_text(), re.MULTILINE)
    assert match, "client_max_body_size is not set in MiB"
    assert int(match[1]) * 1024 * 1024 == Gateway().max_body_bytes


@pytest.mark.parametrize(
    "path",
    [
        "/v1/voice/chat/completions",
        "/v1/copilot/chat/completions",
        "/v1/gui/chat/completions",
        "/v1/agents/research/chat/completions",
        "/v1/agents/stream",
        "/v1/research/chat/completions",
        "/v1/any-new-profile/completions",
        "/v1/chat/completions",
        "/v1/completions",
    ],
)
def test_streaming_routes_are_never_buffered(path: str) -> None:
    regex_locations = {
        pattern.removeprefix("~").strip(): body
        for pattern, body in _locations(NGINX_SITE.read_text()).items()
        if pattern.startswith("~")
    }
    matching = [body for pattern, body in regex_locations.items() if re.search(pattern, path)]
    assert len(matching) == 1, f"{path} matches {len(matching)} regex locations"
    body = matching[0]
    assert re.search(r"proxy_buffering\s+off;", body)
    assert re.search(r"proxy_read_timeout\s+3600s;", body)


def test_internal_endpoints_allow_only_internal_networks() -> None:
    locations = _locations(NGINX_SITE.read_text())
    for pattern in ("= /metrics", "/management/"):
        body = locations[pattern]
        allowed = re.findall(r"allow\s+(\S+);", body)
        assert {"127.0.0.1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(allowed)
        assert body.rstrip().find("deny all;") > max(body.find(f"allow {a};") for a in allowed)
