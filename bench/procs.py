"""The processes under test (fake Ollama, gateway) on loopback, and their CPU and memory from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
_MIB = 1024 * 1024
# Rate limits of the full pipelines: counted (the work is measured) but never reached.
UNLIMITED_PER_MINUTE = 100_000_000
# Models whose name sets the fake's timing (`timed-<first ms>-<gap ms>`, bench/fake_ollama.py): non-streaming
# chat answered after 60 ms and voice 50 ms to the first token then 10 ms apart (bench/latency.py), a
# token a second and a quick probe (bench/open_streams.py). The gateways know them by name.
TIMED_MODELS = ("timed-60-0", "timed-50-10", "timed-1000-1000", "timed-5-0")


def tree(proc: psutil.Process) -> list[psutil.Process]:
    """A process and all its descendants; none once it is gone."""
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return []


class BenchError(RuntimeError):
    """Something the benchmark needs did not start or answer."""


def find_tool(name: str) -> str | None:
    """A command of the bench extra (py-spy, granian): beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Usage:
    """CPU seconds of a process tree, its involuntary context switches so far, and its memory now."""

    user_s: float
    system_s: float
    rss_mib: float  # all processes of the tree together
    worker_rss_mib: float  # the largest process that serves requests
    involuntary: int  # times another process took a CPU from one of them

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s


class Server:
    """A started process group; CPU and RSS are read for the process and all its descendants."""

    def __init__(
        self, name: str, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name, self.port, self.log_path = name, port, log
        self.log = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else os.environ | env,
        )
        self.process = psutil.Process(self.popen.pid)

    def processes(self) -> list[psutil.Process]:
        return tree(self.process)

    def usage(self) -> Usage:
        user = system = 0.0
        rss = largest = involuntary = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times, memory = proc.cpu_times(), proc.memory_info().rss
                switches = proc.num_ctx_switches().involuntary
                user += times.user
                system += times.system
                rss += memory
                largest = max(largest, memory)
                involuntary += switches
        return Usage(user, system, rss / _MIB, largest / _MIB, involuntary)

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


def bare_pipelines(workdir: Path, keep: tuple[str, ...] = ("chunking", "cache")) -> Path:
    """The repository's pipelines with only the `keep` stages: the bare path every stage is added to.

    `cache` stays so embeddings hits and misses mean something; chats without temperature 0 or a seed
    pass it by (only deterministic answers are cached).
    """
    return rewrite_pipelines(workdir / "pipelines", lambda spec: _keep_stages(spec, keep))


def full_pipelines(workdir: Path, without: str | None = None) -> Path:
    """The repository's pipelines as they are, with rate limits so high that none is ever refused;
    `without`: that stage taken out of every pipeline (what it costs, bench/instructions.py)."""

    def change(spec: Any) -> None:
        _raise_limits(spec)
        if without is not None:
            spec["stages"] = [s for s in spec.get("stages") or [] if _stage_name(s) != without]

    return rewrite_pipelines(workdir / "pipelines-full", change)


def rewrite_pipelines(folder: Path, change: Callable[[Any], None], source: Path = REPO / "pipelines") -> Path:
    """Every pipeline file of `source` (the repository's), `change`d, written into `folder` (which may
    be `source` itself: the files changed in place)."""
    from ruamel.yaml import YAML  # the gateway's own YAML library; imported only when a bench runs

    yaml = YAML()
    folder.mkdir(exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        spec = yaml.load(path)
        change(spec)
        with (folder / path.name).open("w") as out:
            yaml.dump(spec, out)
    return folder


def _stage_name(stage: Any) -> str:
    return stage if isinstance(stage, str) else next(iter(stage))


def _keep_stages(spec: Any, keep: tuple[str, ...]) -> None:
    spec["stages"] = [s for s in spec.get("stages") or [] if _stage_name(s) in keep]


def _raise_limits(spec: Any) -> None:
    for stage in spec.get("stages") or []:
        if _stage_name(stage) == "rate_limit" and not isinstance(stage, str):
            settings = stage["rate_limit"]
            for key in ("requests_per_minute", "tokens_per_minute"):
                if key in settings:
                    settings[key] = UNLIMITED_PER_MINUTE


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway under test: its server, workers, pipelines and any extra config sections (YAML)."""

    name: str
    # hypercorn | uvicorn (`citadel-proxy serve`), or granian: measured only, through its own command
    # line with the app factory, since `gateway.server` does not offer it.
    server: str = "hypercorn"
    workers: int = 1
    pipelines: str = "pipelines"  # a folder under the work folder
    extra: str = ""  # top-level YAML lines: database, redis, auth
    only: tuple[str, ...] = ()  # scenario name prefixes it runs; () runs them all
    # What runs in place of `citadel-proxy` (uvicorn, hypercorn): a bench wrapper (bench/work_stage.py).
    command: tuple[str, ...] = ()

    def runs(self, scenario: str) -> bool:
        return not self.only or scenario.startswith(self.only)

    @property
    def processes(self) -> int:
        """One worker serves in-process; several run under a supervisor as its children (granian always
        runs its workers under its own supervisor)."""
        return 1 if self.workers == 1 and self.server != "granian" else self.workers + 1


def gateway_config(
    workdir: Path, spec: GatewaySpec, name: str, ollama_port: int, max_connections: int
) -> Path:
    state = workdir / name
    pipelines = workdir / spec.pipelines
    path = workdir / f"{name}.yaml"
    names = ("phi3", "paced", *TIMED_MODELS)
    models = ", ".join(f'{{name: "{n}:latest"}}' for n in names)
    aliases = ", ".join(f'{n}: "{n}:latest"' for n in names)
    path.write_text(
        f"ollama:\n  service: {{host: 127.0.0.1, port: {ollama_port}, max_connections: {max_connections}}}\n"
        f"  models: [{models}]\n"
        f"model_routing: {{aliases: {{{aliases}}}}}\n"
        f"gateway: {{server: {'uvicorn' if spec.server == 'granian' else spec.server}}}\n"
        f"paths: {{pipelines: {pipelines}, data: {state / 'data'}, logs: {state / 'log'},"
        f" backups: {state / 'backups'}}}\n"
        "monitoring: {logging: {level: WARNING}}\n" + spec.extra
    )
    return path


def start_gateway(
    spec: GatewaySpec, workdir: Path, ollama_port: int, suffix: str = "", max_connections: int = 256
) -> Server:
    """`citadel-proxy serve` exactly as production runs it, started; wait_ready(spec.processes) follows."""
    name = spec.name + suffix
    port = free_port()
    config = gateway_config(workdir, spec, name, ollama_port, max_connections)
    log = workdir / f"{name}.log"
    if spec.server == "granian":
        argv = [find_tool("granian") or "granian", "--interface", "asgi", "--factory"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(spec.workers)]
        argv += ["--loop", "uvloop", "--no-access-log", "citadel_proxy.asgi:from_environment"]
        return Server(name, argv, port, log, env={"CITADEL_CONFIG": str(config)})
    command = spec.command or (str(Path(sys.executable).with_name("citadel-proxy")),)
    argv = [*command, "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
    return Server(name, [*argv, "--workers", str(spec.workers)], port, log)
