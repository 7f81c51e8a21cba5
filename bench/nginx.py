"""A plain nginx hop in front of the fake Ollama: the baseline for what one proxy hop costs."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.procs import Server, free_port

_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((str(Path(d) / "nginx") for d in _SEARCH if (Path(d) / "nginx").is_file()), None)


def _server_block(listen: int, upstream: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{listen} backlog=1024;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}"""


def nginx_conf(workdir: Path, routes: dict[int, int]) -> str:
    """One worker; each listen port -> an upstream (with keepalive) on loopback."""
    upstreams, servers = [], []
    for index, (listen, target) in enumerate(routes.items()):
        upstreams.append(f"    upstream u{index} {{ server 127.0.0.1:{target}; keepalive 1024; }}")
        servers.append(_server_block(listen, f"u{index}"))
    temp = workdir / "nginx-temp"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
error_log {workdir / "nginx-error.log"} warn;
pid {workdir / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
{chr(10).join(upstreams)}
{"".join(servers)}
}}
"""


def start_nginx(binary: str, workdir: Path, targets: list[int]) -> tuple[Server, list[int]]:
    """nginx in the foreground; returns the server and the listen port for each target port."""
    (workdir / "nginx-temp").mkdir(exist_ok=True)
    listens = [free_port() for _ in targets]
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, dict(zip(listens, targets, strict=True))))
    argv = [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"]
    server = Server("nginx", argv, listens[0], workdir / "nginx.log")
    for port in listens:
        server.port = port
        server.wait_ready("/")
    return server, listens
