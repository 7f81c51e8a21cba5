"""Several workers share the connections: each listens on a socket of its own (SO_REUSEPORT).

On one shared socket the worker that woke first accepted a whole burst of connections, and keep-alive
connections (nginx's upstream pool, a client's) stayed with it: 60 of 64 in one worker was common.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from pathlib import Path

import psutil
import pytest

from tests.core.conftest import REPO, write_config
from tests.core.test_reload import start_serve, until_answering

CONNECTIONS = 64
# Hashing 64 connections over 2 sockets: fewer than 12 in one has a chance of about 1 in 10^6.
AT_LEAST = 12


def connections_per_worker(parent: psutil.Process, port: int) -> list[int]:
    counts = []
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            established = [
                c
                for c in child.net_connections("tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            ]
            listening = any(
                c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                for c in child.net_connections("tcp")
            )
            if listening:
                counts.append(len(established))
    return counts


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_two_workers_each_take_a_share_of_a_burst_of_connections(tmp_path: Path, server: str) -> None:
    config = write_config(tmp_path, 9, REPO / "pipelines", extra_gateway=f"  server: {server}")
    with (tmp_path / "gateway.log").open("wb") as log:
        process, url = start_serve(config, 2, log)
        port = int(url.rsplit(":", 1)[1])
        clients: list[socket.socket] = []
        try:
            await until_answering(url)
            parent = psutil.Process(process.pid)
            # A burst, as a load balancer's pool opens: all of them queued before a worker wakes.
            for _ in range(CONNECTIONS):
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
                clients.append(client)
            counts: list[int] = []
            for _ in range(100):  # until both workers have accepted every connection
                counts = connections_per_worker(parent, port)
                if len(counts) == 2 and sum(counts) == CONNECTIONS:
                    break
                await asyncio.sleep(0.1)
        finally:
            for client in clients:
                client.close()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    assert sum(counts) == CONNECTIONS, (counts, (tmp_path / "gateway.log").read_text())
    assert min(counts) >= AT_LEAST, counts
