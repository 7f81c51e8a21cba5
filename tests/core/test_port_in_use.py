"""A port that is already taken: one clear line on stderr and exit status 2, with either server.

The holder sets SO_REUSEPORT, as a hypercorn gateway with several workers used to: a second gateway
must still be refused, not share the port with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.conftest import REPO, write_config

# Generous: the command imports the whole gateway on a loaded 2-core machine.
START_TIMEOUT_S = 60.0


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def run_to_end(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command's outcome; one that serves instead of failing is ended with all its workers."""
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_a_taken_port_is_one_line_and_exit_2(
    tmp_path: Path, taken_port: int, server: str, workers: str
) -> None:
    config = write_config(tmp_path, 9, REPO / "pipelines", extra_gateway=f"  server: {server}")
    address = f"127.0.0.1:{taken_port}"
    command = [sys.executable, "-m", "citadel_proxy", "serve", "--config", str(config)]
    done = run_to_end([*command, "--bind", address, "--workers", workers], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"citadel-proxy: cannot listen on {address}: the address is already in use "
        "(another gateway, or another program, holds the port)"
    ]
    assert done.stdout == ""
