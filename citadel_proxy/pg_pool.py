"""What the gateway's psycopg pools (the audit trail's, the keys') share."""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool


async def check_taken(conn: psycopg.AsyncConnection[Any]) -> None:
    """A pool's check of a connection it hands out: after a database restart a broken connection is
    replaced, not used to fail the work it was taken for.

    A round trip (the pool's own check) only when the server said something while the connection sat in
    the pool: a server that ends a session (a restart, a terminated backend) sends its reason and closes
    the socket, and either makes it readable; an idle healthy session has nothing to read. A round trip
    on every take would cost a good part of what an audit batch itself costs.
    """
    if conn.closed or _readable(conn.pgconn.socket):
        await AsyncConnectionPool.check_connection(conn)


def _readable(fd: int) -> bool:
    # poll, not select: a worker holding thousands of streams has descriptors past select's limit.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
