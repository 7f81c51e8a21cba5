"""The front as shipped (issue 17, item 5): nginx/citadel-proxy.conf with TLS before the gateway.

The shipped site runs as it is, with only what a bench must change: loopback ports, a self-signed
certificate made by nginx/make-cert.sh in the work folder, logs there too (its access log is written,
as in production). The load generator speaks TLS (HTTP/1.1, keep-alive, so each figure is per request;
nginx closes a client connection after 1000 requests, and the reconnect's handshake is counted). Each
round runs, interleaved:

- direct: the fake Ollama, plain HTTP; tls-direct: the site in front of the fake (its /api/chat
  location), what nginx and TLS cost on their own;
- uv-1w: the bare gateway, plain HTTP; tls+uv-1w: the site in front of the same gateway;
- uv-full / tls+uv-full: the same with every stage on (when PostgreSQL and Redis answer).

Added TTFT is against direct in the same round; "front" is the chain against its back end alone (the
gateway, or direct for tls-direct). CPU per request is nginx's and the gateway's own. A full TLS
handshake's time and nginx's CPU for it are measured apart, on fresh connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.full import prepare
from bench.loadgen import Job, LoadProcess, tls_context
from bench.measure import percentile
from bench.nginx import find_nginx
from bench.procs import (
    REPO,
    GatewaySpec,
    Server,
    bare_pipelines,
    free_port,
    full_pipelines,
    start_fake,
    start_gateway,
)
from bench.scenarios import TOKENS, Budget, Scenario, Target, job_for

NAME = "tls"
SITE = REPO / "nginx" / "citadel-proxy.conf"
MAKE_CERT = REPO / "nginx" / "make-cert.sh"
SCENARIOS = [Scenario(f"{kind} c{c}", kind, c) for kind in ("chat", "voice") for c in (1, 32)]
DIRECT, TLS_DIRECT = "direct", "tls-direct"
HANDSHAKES = 200


@dataclass(frozen=True)
class Front:
    """One target: where the load goes, over TLS or not, and whose CPU is counted."""

    name: str
    port: int
    server: Server  # what listens on the port: the fake, the gateway or nginx
    gateway: Server | None  # None: the fake's own API
    nginx: Server | None
    backend: str  # the target this one is compared with for "front" (itself for the plain ones)
    headers: bytes = b""


@dataclass(frozen=True)
class FrontSample:
    scenario: str
    target: str
    round: int
    requests: int
    errors: int
    rps: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    nginx_cpu_ms: float  # per request
    gateway_cpu_ms: float
    reconnects: int

    def line(self) -> str:
        cpu = f"cpu nginx {self.nginx_cpu_ms:.3f} gateway {self.gateway_cpu_ms:.3f} ms/req"
        return f"{self.rps:6.0f} req/s  ttft p50 {self.ttft_p50_ms:6.3f} ms  {cpu}  errors {self.errors}"


@dataclass(frozen=True)
class Handshake:
    """Full TLS handshakes on fresh connections, one at a time."""

    count: int
    version: str
    p50_ms: float
    p99_ms: float
    nginx_cpu_ms: float  # per handshake

    def line(self) -> str:
        return (
            f"full TLS handshake ({self.version}, {self.count} one at a time): p50 {self.p50_ms:.3f} ms,"
            f" p99 {self.p99_ms:.3f} ms, nginx CPU {self.nginx_cpu_ms:.3f} ms each"
        )


@dataclass
class FrontResult:
    samples: list[FrontSample] = field(default_factory=list)
    handshake: Handshake | None = None
    notes: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)


def render_site(text: str, https: int, http: int, upstream: int, cert: Path, key: Path, logs: Path) -> str:
    """The shipped site with its production ports and paths replaced (IPv6 listens dropped); fails
    when one of them is no longer in the file, so the bench never measures a site we do not ship."""
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "server 127.0.0.1:8002;": f"server 127.0.0.1:{upstream};",
        "/etc/ssl/certs/citadel-proxy.crt": str(cert),
        "/etc/ssl/private/citadel-proxy.key": str(key),
        "/var/log/nginx/": f"{logs}/",
    }
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"{old!r} is no longer in {SITE.name}: update bench/tls_front.render_site")
        text = text.replace(old, new)
    return "".join(line for line in text.splitlines(keepends=True) if "listen [::]" not in line)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "citadel-proxy.crt", folder / "citadel-proxy.key"
    env = {**os.environ, "CITADEL_CERT": str(cert), "CITADEL_KEY": str(key)}
    subprocess.run(
        ["sh", str(MAKE_CERT), "localhost", "127.0.0.1"], env=env, check=True, capture_output=True, timeout=60
    )
    return cert, key


def start_site(
    binary: str, workdir: Path, name: str, upstream: int, cert: Path, key: Path
) -> tuple[Server, int]:
    """nginx with one worker (a 2-core machine) and the shipped site in front of `upstream`."""
    root = workdir / name
    for folder in ("logs", "tmp"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    https, http = free_port(), free_port()
    site = root / "citadel-proxy.conf"
    site.write_text(render_site(SITE.read_text(), https, http, upstream, cert, key, root / "logs"))
    tmp = root / "tmp"
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, the worker would run as `nobody`, who cannot write into the work folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/logs/error.log warn;\n"
        f"events {{ worker_connections 4096; }}\nhttp {{\n{temp_paths}    include {site};\n}}\n"
    )
    argv = [binary, "-p", f"{root}/", "-c", str(conf), "-e", str(root / "logs" / "error.log")]
    server = Server(name, [*argv, "-g", "daemon off;"], http, root / "nginx.log")
    server.wait_ready("/")  # plain HTTP answers 308: nginx is up
    return server, https


def run(workdir: Path, stack: contextlib.ExitStack, rounds: int, budget: Budget) -> FrontResult:
    out = FrontResult()
    binary = find_nginx()
    if binary is None or shutil.which("openssl") is None:
        out.notes.append("tls: nginx or openssl is not installed (`make system-deps`), nothing measured")
        return out
    _log("tls: certificate, fake Ollama, uv-1w (and uv-full), the shipped nginx site in front of each")
    cert, key = make_certificate(workdir)
    fake = start_fake("tls-fake", workdir, TOKENS, 0.0)
    stack.callback(fake.stop)
    bare_pipelines(workdir)
    specs = [(GatewaySpec("uv-1w", server="uvicorn"), b"")]
    full = prepare(stack, out.notes)
    if full is not None:
        full_pipelines(workdir)
        specs.append(
            (
                GatewaySpec("uv-full", server="uvicorn", pipelines="pipelines-full", extra=full.extra),
                full.headers,
            )
        )
    fronts = [Front(DIRECT, fake.port, fake, None, None, DIRECT)]
    nginx, port = start_site(binary, workdir, "nginx-tls-direct", fake.port, cert, key)
    stack.callback(nginx.stop)
    fronts.append(Front(TLS_DIRECT, port, nginx, None, nginx, DIRECT))
    for spec, headers in specs:
        gateway = start_gateway(spec, workdir, fake.port, suffix="-tls")
        stack.callback(gateway.stop)
        gateway.wait_ready("/health", timeout_s=90.0)
        site, port = start_site(binary, workdir, f"nginx-tls-{spec.name}", gateway.port, cert, key)
        stack.callback(site.stop)
        fronts.append(Front(spec.name, gateway.port, gateway, gateway, None, spec.name, headers))
        fronts.append(Front(f"tls+{spec.name}", port, site, gateway, site, spec.name, headers))
    out.backends = {f.name: f.backend for f in fronts}
    load = LoadProcess()
    stack.callback(load.close)
    ca = str(cert)
    warm = Budget(0.3, 2000, 0, 0)
    for front in fronts:
        for scenario in SCENARIOS:
            load.run(_job(front, scenario, warm, ca))
    for round_ in range(1, rounds + 1):
        shift = (round_ - 1) % len(fronts)
        order = fronts[shift:] + fronts[:shift]
        for scenario in SCENARIOS:
            for front in order:
                sample = _measure(load, front, scenario, budget, round_, ca)
                out.samples.append(sample)
                _log(f"  round {round_}/{rounds}  tls {scenario.name:9} {front.name:11} {sample.line()}")
                time.sleep(0.05)
    out.handshake = _handshakes(nginx, port_of(fronts, TLS_DIRECT), ca)
    return out


def port_of(fronts: list[Front], name: str) -> int:
    return next(f.port for f in fronts if f.name == name)


def _job(front: Front, scenario: Scenario, budget: Budget, ca: str) -> Job:
    # job_for picks the path and body: the gateway's OpenAI routes, or the fake's own API.
    gateway = front.gateway is not None
    target = Target(front.name, gateway, front.server, front.port, front.server, front.port, front.headers)
    job = job_for(target, scenario, budget)
    return Job(**{**job.__dict__, "tls_ca": ca if front.nginx is not None else ""})


def _cpu(server: Server | None) -> float:
    return server.usage().cpu_s if server is not None else 0.0


def _measure(
    load: LoadProcess, front: Front, scenario: Scenario, budget: Budget, round_: int, ca: str
) -> FrontSample:
    before = _cpu(front.nginx), _cpu(front.gateway)
    result = load.run(_job(front, scenario, budget, ca))
    after = _cpu(front.nginx), _cpu(front.gateway)
    done = len(result.total)

    def per_request(index: int) -> float:
        return (after[index] - before[index]) * 1000 / done if done else float("nan")

    return FrontSample(
        scenario=scenario.name,
        target=front.name,
        round=round_,
        requests=done,
        errors=result.errors,
        rps=done / result.elapsed_s if result.elapsed_s else 0.0,
        ttft_p50_ms=percentile(result.ttft, 0.5) * 1000,
        ttft_p99_ms=percentile(result.ttft, 0.99) * 1000,
        nginx_cpu_ms=per_request(0),
        gateway_cpu_ms=per_request(1),
        reconnects=result.reconnects,
    )


def _handshakes(nginx: Server, port: int, ca: str) -> Handshake:
    """Full handshakes: Python's ssl resumes no session unless given one (and the site issues no tickets)."""
    times, version = [], ""
    context = tls_context(ca)
    before = nginx.usage().cpu_s
    for _ in range(HANDSHAKES):
        started = time.perf_counter()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            times.append(time.perf_counter() - started)
            version = tls.version() or ""
    cpu = nginx.usage().cpu_s - before
    return Handshake(
        count=HANDSHAKES,
        version=version,
        p50_ms=percentile(times, 0.5) * 1000,
        p99_ms=percentile(times, 0.99) * 1000,
        nginx_cpu_ms=cpu * 1000 / HANDSHAKES,
    )


@dataclass(frozen=True)
class FrontRow:
    """Medians over rounds; spreads are min-max over rounds."""

    scenario: str
    target: str
    rounds: int
    errors: int
    rps: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    added_p50_ms: float  # vs direct, same round
    added_p99_ms: float
    front_p50_ms: float  # vs its back end alone, same round
    front_p99_ms: float
    front_p50_spread: str
    nginx_cpu_ms: float
    gateway_cpu_ms: float

    @property
    def chain_cpu_ms(self) -> float:
        return self.nginx_cpu_ms + self.gateway_cpu_ms

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "chain_cpu_ms": self.chain_cpu_ms}


def _median(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def rows(result: FrontResult) -> list[FrontRow]:
    at = {(s.scenario, s.target, s.round): s for s in result.samples}
    groups: dict[tuple[str, str], list[FrontSample]] = {}
    for sample in result.samples:
        groups.setdefault((sample.scenario, sample.target), []).append(sample)
    found = []
    for (scenario, target), group in groups.items():
        backend = result.backends.get(target, target)

        def against(name: str, field_: str, group: list[FrontSample] = group) -> list[float]:
            pairs = [(s, at.get((s.scenario, name, s.round))) for s in group]
            return [getattr(s, field_) - getattr(o, field_) for s, o in pairs if o is not None]

        front = against(backend, "ttft_p50_ms") if backend != target else []
        found.append(
            FrontRow(
                scenario=scenario,
                target=target,
                rounds=len(group),
                errors=sum(s.errors for s in group),
                rps=_median([s.rps for s in group]),
                ttft_p50_ms=_median([s.ttft_p50_ms for s in group]),
                ttft_p99_ms=_median([s.ttft_p99_ms for s in group]),
                added_p50_ms=_median(against(DIRECT, "ttft_p50_ms")) if target != DIRECT else float("nan"),
                added_p99_ms=_median(against(DIRECT, "ttft_p99_ms")) if target != DIRECT else float("nan"),
                front_p50_ms=_median(front),
                front_p99_ms=_median(against(backend, "ttft_p99_ms")) if front else float("nan"),
                front_p50_spread=f"{min(front):+.3f}..{max(front):+.3f}" if front else "-",
                nginx_cpu_ms=_median([s.nginx_cpu_ms for s in group]),
                gateway_cpu_ms=_median([s.gateway_cpu_ms for s in group]),
            )
        )
    return found


def _cell(value: float, signed: bool = True) -> str:
    if value != value:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


_HEAD = (
    ("scenario", 9), ("target", 11), ("req/s", 6), ("ttft p50", 8), ("p99", 7), ("+direct p50", 11),
    ("p99", 7), ("+front p50", 10), ("p99", 7), ("front p50 spread", 17), ("nginx cpu", 9),
    ("gw cpu", 7), ("chain", 6), ("err", 3),
)  # fmt: skip


def lines(found: list[FrontRow], handshake: Handshake | None) -> list[str]:
    """The table: times in ms, CPU in ms per request."""
    out = [" ".join(name.ljust(w) if i < 2 else name.rjust(w) for i, (name, w) in enumerate(_HEAD))]
    for r in found:
        cells = [
            r.scenario, r.target, f"{r.rps:.0f}", f"{r.ttft_p50_ms:.3f}", f"{r.ttft_p99_ms:.3f}",
            _cell(r.added_p50_ms), _cell(r.added_p99_ms), _cell(r.front_p50_ms), _cell(r.front_p99_ms),
            r.front_p50_spread, f"{r.nginx_cpu_ms:.3f}", f"{r.gateway_cpu_ms:.3f}", f"{r.chain_cpu_ms:.3f}",
            str(r.errors),
        ]  # fmt: skip
        out.append(
            " ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, (_, w)) in enumerate(zip(cells, _HEAD, strict=True))
            )
        )
    if handshake is not None:
        out.append(handshake.line())
    return out


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
