"""A real gateway whose PostgreSQL is reached through a cuttable proxy; a load that can pause for a kill.

Everything here is asynchronous: the TCP proxy that stands between the gateway and PostgreSQL runs in
the test's own event loop, so nothing may block it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from citadel_proxy.config.schema import Database
from tests.deploy.harness import REPO, venv_script

STARTUP_TIMEOUT_S = 60.0
# The keys under test are in PostgreSQL: the config file names none. durability: spool, because with
# `queue` a record still in memory is lost to a SIGKILL by design (README, Operations).
CONFIG = """\
ollama: {{service: {{host: 127.0.0.1, port: {ollama_port}}}, models: [{{name: 'phi3:latest'}}]}}
model_routing: {{aliases: {{phi3: 'phi3:latest'}}}}
paths: {{pipelines: '{pipelines}', data: '{root}/data', logs: '{root}/log', backups: '{root}/backups'}}
database: {{host: 127.0.0.1, port: {db_port}, database: {db_name}, user: {db_user}, schema: {schema},
  ssl_mode: disable}}
audit: {{durability: spool, retry_s: 0.2, write_timeout_s: 2.0}}
"""


def gateway_config(root: Path, ollama_port: int, database: Database, db_port: int) -> Path:
    """A config whose database is reached through `db_port` (the proxy); other settings are defaults."""
    path = root / "citadel.yaml"
    path.write_text(
        CONFIG.format(
            ollama_port=ollama_port,
            pipelines=REPO / "pipelines",
            root=root,
            db_port=db_port,
            db_name=database.database,
            db_user=database.user,
            schema=database.db_schema,
        )
    )
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "PROMETHEUS_MULTIPROC"))}


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@dataclass
class Process:
    """A child process with its output in a log file, ready once `port` accepts connections."""

    command: list[str]
    log: Path
    port: int
    cwd: Path = REPO
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=self.cwd, env=clean_env()
            )
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not await port_open(self.port):
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.command[0]} exited:\n{self.log.read_text()[-4000:]}")
                await asyncio.sleep(0.05)

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(20):
            return await self.process.wait()


def gateway(config: Path, port: int, log: Path) -> Process:
    command = [venv_script("citadel-proxy"), "serve", "--config", str(config)]
    return Process([*command, "--bind", f"127.0.0.1:{port}", "--workers", "1"], log, port)


def fake_ollama(port: int, log: Path) -> Process:
    command = [sys.executable, "-m", "tests.fakes.ollama", "--port", str(port), "--tokens", "4"]
    return Process(command, log, port)


Hook = Callable[[], Awaitable[None]]


@dataclass
class PausableLoad:
    """`count` requests, `concurrency` in flight, calling `send(i)` for each.

    `hooks[i]` runs just before request i starts, while others are still in flight; `pauses[i]` runs
    once nothing is in flight (a kill that should cut no request short) and the load resumes after it.
    """

    count: int
    concurrency: int
    send: Callable[[int], Awaitable[int]]
    hooks: dict[int, Hook] = field(default_factory=dict)
    pauses: dict[int, Hook] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    _in_flight: int = 0
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _next: Iterator[int] = field(default_factory=lambda: iter(()))

    async def run(self) -> dict[int, int]:
        self._next = iter(range(self.count))
        self._gate.set()
        await asyncio.gather(*(self._worker() for _ in range(self.concurrency)))
        return self.statuses

    async def _worker(self) -> None:
        while True:
            await self._gate.wait()
            index = next(self._next, None)
            if index is None:
                return
            if index in self.pauses:
                self._gate.clear()
                await self._idle.wait()
                await self.pauses[index]()
                self._gate.set()
            if index in self.hooks:
                await self.hooks[index]()
            self._in_flight += 1
            self._idle.clear()
            try:
                self.statuses[index] = await self.send(index)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
