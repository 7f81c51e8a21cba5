"""The processes under test (fake Ollama, gateway) on loopback, and their CPU and memory from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
_MIB = 1024 * 1024


class BenchError(RuntimeError):
    """Something the benchmark needs did not start or answer."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user+system) of a process tree and its memory now."""

    cpu_s: float
    rss_mib: float  # all processes of the tree together
    worker_rss_mib: float  # the largest process that serves requests


class Server:
    """A started process group; CPU and RSS are read for the process and all its descendants."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log_path = name, port, log
        self.log = log.open("wb")
        self.popen = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.process = psutil.Process(self.popen.pid)

    def processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self.process, *self.process.children(recursive=True)]
        return []

    def usage(self) -> Usage:
        cpu, rss, largest = 0.0, 0, 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times, memory = proc.cpu_times(), proc.memory_info().rss
                cpu += times.user + times.system
                rss += memory
                largest = max(largest, memory)
        return Usage(cpu, rss / _MIB, largest / _MIB)

    def wait_ready(self, path: str, timeout_s: float = 30.0, processes: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.log_tail()}")
            if len(self.processes()) >= processes and _answers(self.port, path):
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer GET {path} on port {self.port}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's output (the work folder is removed when the bench ends)."""
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


def _answers(port: int, path: str) -> bool:
    # http.client, not urllib: urllib would honour an http_proxy variable and leave loopback.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status < 500
    except OSError:
        return False
    finally:
        conn.close()


def start_fake(name: str, workdir: Path, tokens: int, token_delay_ms: float) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.fake_ollama", "--port", str(port), "--tokens", str(tokens)]
    argv += ["--token-delay-ms", str(token_delay_ms)]
    server = Server(name, argv, port, workdir / f"{name}.log")
    server.wait_ready("/")
    return server


def bare_pipelines(workdir: Path, keep: tuple[str, ...] = ("chunking",)) -> Path:
    """The repository's pipelines with only the `keep` stages: the bare path every stage is added to."""
    from ruamel.yaml import YAML  # the gateway's own YAML library; imported only when a bench runs

    yaml = YAML()
    folder = workdir / "pipelines"
    folder.mkdir(exist_ok=True)
    for source in sorted((REPO / "pipelines").glob("*.yaml")):
        spec = yaml.load(source)
        stages = spec.get("stages") or []
        spec["stages"] = [s for s in stages if (s if isinstance(s, str) else next(iter(s))) in keep]
        with (folder / source.name).open("w") as out:
            yaml.dump(spec, out)
    return folder


def gateway_config(workdir: Path, name: str, ollama_port: int, max_connections: int) -> Path:
    state = workdir / name
    pipelines = workdir / "pipelines"
    if not pipelines.exists():
        bare_pipelines(workdir)
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"ollama:\n  service: {{host: 127.0.0.1, port: {ollama_port}, max_connections: {max_connections}}}\n"
        '  models: [{name: "phi3:latest"}]\n'
        'model_routing: {aliases: {phi3: "phi3:latest"}}\n'
        f"paths: {{pipelines: {pipelines}, data: {state / 'data'}, logs: {state / 'log'},"
        f" backups: {state / 'backups'}}}\n"
        "monitoring: {logging: {level: WARNING}}\n"
    )
    return path


def start_gateway(
    name: str, workdir: Path, ollama_port: int, workers: int, max_connections: int = 256
) -> Server:
    """`citadel-proxy serve` exactly as production runs it (hypercorn; 1 worker runs in-process)."""
    port = free_port()
    config = gateway_config(workdir, name, ollama_port, max_connections)
    binary = Path(sys.executable).with_name("citadel-proxy")
    argv = [str(binary), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
    server = Server(name, [*argv, "--workers", str(workers)], port, workdir / f"{name}.log")
    # With 2 workers hypercorn runs a supervisor and the workers as its children.
    server.wait_ready("/health", processes=1 if workers == 1 else workers + 1)
    return server
