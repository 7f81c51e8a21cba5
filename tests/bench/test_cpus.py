"""bench/cpus.py: the gateway on a core of its own, the rest elsewhere, every affinity put back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from bench.cpus import own_core, split

CPUS = set(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="pinning needs two CPUs")
_FORKS = (
    "import os, socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); sys.stdin.readline()\n"
    "if os.fork() == 0: time.sleep(60)\n"  # as PostgreSQL forks a backend for a new connection
    "else: print('forked', flush=True); time.sleep(60)\n"
)
_LISTEN = (
    "import socket, sys, threading, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
)


def test_the_gateway_takes_the_lowest_cpu_and_the_rest_go_elsewhere() -> None:
    assert split({0}) is None
    assert split({3, 1, 2}) == ({1}, {2, 3})


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _threads(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(t.id) for t in psutil.Process(pid).threads()]


@needs_two
def test_own_core_pins_every_thread_and_puts_them_back(sleepers: list[subprocess.Popen[bytes]]) -> None:
    gateway, harness = (psutil.Process(p.pid) for p in sleepers)
    server = subprocess.Popen([sys.executable, "-c", _LISTEN], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        mine, others = split(CPUS) or ({0}, {1})

        with own_core([gateway], [harness], [port]) as pinned:
            assert _threads(gateway.pid) == [mine]
            assert _threads(harness.pid) == [others]
            assert _threads(server.pid) == [others, others]  # the server found by its port, both threads
            assert pinned.notes == []

        for pid in (gateway.pid, harness.pid, server.pid):
            assert all(cpus == CPUS for cpus in _threads(pid))
    finally:
        server.kill()
        server.wait()


@needs_two
def test_a_port_nobody_listens_on_is_noted(sleepers: list[subprocess.Popen[bytes]]) -> None:
    gateway = psutil.Process(sleepers[0].pid)
    with own_core([gateway], [], [1]) as pinned:
        assert pinned.notes == ["the server on port 1 not pinned: no process of it could be seen"]
    assert _threads(gateway.pid) == [CPUS]


@needs_two
def test_a_process_the_server_forks_while_pinned_is_put_back(sleepers: list[subprocess.Popen[bytes]]) -> None:
    gateway = psutil.Process(sleepers[0].pid)
    server = subprocess.Popen(
        [sys.executable, "-c", _FORKS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        port = int(server.stdout.readline())
        with own_core([gateway], [], [port]):
            server.stdin.write(b"fork\n")
            server.stdin.flush()
            assert server.stdout.readline() == b"forked\n"
            (child,) = psutil.Process(server.pid).children()
            assert _threads(child.pid) == [(split(CPUS) or ({0}, {1}))[1]]  # it inherited the pinned mask

        assert _threads(child.pid) == [CPUS]
    finally:
        os.killpg(server.pid, 9)
        server.wait()
