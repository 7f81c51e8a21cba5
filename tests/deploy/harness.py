"""Running the shipped deployment files for real: tools, a test certificate, nginx in a temp prefix.

The shipped nginx site names production ports and paths; `render_site` swaps exactly those for a temp
prefix and high ports, and fails loudly when one of them is no longer in the file, so the test never
silently checks something other than what we ship.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NGINX_SITE = REPO / "nginx" / "citadel-proxy.conf"
MAKE_CERT = REPO / "nginx" / "make-cert.sh"
SYSTEMD_DIR = REPO / "systemd"
PROMETHEUS_DIR = REPO / "conf" / "prometheus"
DASHBOARD = REPO / "conf" / "grafana" / "citadel-dashboard.json"
LOGROTATE = REPO / "conf" / "logrotate" / "citadel-proxy"
# Generous: the gateway imports its whole stack on a loaded 2-core CI machine.
STARTUP_TIMEOUT_S = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, package: str) -> str:
    """The tool's path; a missing one skips here and fails in CI (`make system-deps` installs it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        message = f"{name} is not installed (Debian package {package}; `make system-deps`)"
        if in_ci():
            pytest.fail(f"{message}: CI must run these tests", pytrace=False)
        pytest.skip(message)
    return found


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def make_certificate(directory: Path) -> Certificate:
    """A certificate for 127.0.0.1 and localhost, made by the shipped script."""
    cert = Certificate(directory / "citadel-proxy.crt", directory / "citadel-proxy.key")
    env = {**os.environ, "CITADEL_CERT": str(cert.cert), "CITADEL_KEY": str(cert.key)}
    subprocess.run(
        ["sh", str(MAKE_CERT), "localhost", "127.0.0.1"], env=env, check=True, capture_output=True, timeout=60
    )
    return cert


@dataclass(frozen=True)
class NginxLayout:
    """Where a test nginx lives: a temp prefix, loopback high ports, a test certificate."""

    root: Path
    http_port: int
    https_port: int
    gateway_port: int
    certificate: Certificate

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.logs / "error.log"


def render_site(text: str, layout: NginxLayout) -> str:
    """The shipped site with production ports and paths replaced; IPv6 listens dropped."""
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{layout.http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{layout.https_port} ssl http2;",
        "server 127.0.0.1:8002;": f"server 127.0.0.1:{layout.gateway_port};",
        "/etc/ssl/certs/citadel-proxy.crt": str(layout.certificate.cert),
        "/etc/ssl/private/citadel-proxy.key": str(layout.certificate.key),
        "/var/log/nginx/": f"{layout.logs}/",
    }
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in {NGINX_SITE.name}: update render_site"
        text = text.replace(old, new)
    # Test machines may have no IPv6; production listens on both.
    return "".join(line for line in text.splitlines(keepends=True) if "listen [::]" not in line)


def write_nginx(layout: NginxLayout, site_text: str) -> None:
    """A top-level nginx.conf in the prefix that includes the rendered site, as Debian's does."""
    for folder in ("logs", "tmp"):
        (layout.root / folder).mkdir(parents=True, exist_ok=True)
    site = layout.root / "citadel-proxy.conf"
    site.write_text(render_site(site_text, layout))
    tmp = layout.root / "tmp"
    # As root, nginx's workers would become `nobody`, who cannot write into the test's temp folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    layout.conf.write_text(
        f"{user}worker_processes 1;\n"
        f"pid {layout.root}/nginx.pid;\n"
        f"error_log {layout.error_log} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    client_body_temp_path {tmp}/body;\n"
        f"    proxy_temp_path {tmp}/proxy;\n"
        f"    fastcgi_temp_path {tmp}/fastcgi;\n"
        f"    uwsgi_temp_path {tmp}/uwsgi;\n"
        f"    scgi_temp_path {tmp}/scgi;\n"
        f"    access_log {layout.logs}/access.log;\n"
        f"    include {site};\n"
        "}\n"
    )


def nginx_command(nginx: str, layout: NginxLayout, *extra: str) -> list[str]:
    # -e: nginx opens its compiled-in error log before reading the config, unless told otherwise.
    return [nginx, "-p", f"{layout.root}/", "-c", str(layout.conf), "-e", str(layout.error_log), *extra]


@contextlib.contextmanager
def running(command: list[str], log: Path, what: str, port: int, **popen: Any) -> Iterator[None]:
    """Run `command` (output to `log`, never to an unread pipe) until `port` accepts; stop it after."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {process.returncode}" if process.poll() is not None else "is not ready"
                pytest.fail(f"{what} {state}:\n{log.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.05)
        yield
    finally:
        stop(process)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def venv_script(name: str) -> str:
    """A console script of the environment running the tests (the repo's .venv under `make test`)."""
    script = Path(sys.executable).parent / name
    found = str(script) if script.exists() else shutil.which(name)
    assert found, f"{name} is not installed in {sys.prefix}: pip install -e '.[dev]'"
    return found
