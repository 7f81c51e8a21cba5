"""One quick round trip to PostgreSQL or Redis, shared by `GET /health` and `citadel-proxy health`."""

from __future__ import annotations

import asyncio
import time

from citadel_proxy.config.schema import Database
from citadel_proxy.config.schema import Redis as RedisSettings
from citadel_proxy.errors import reason

# psycopg and redis are imported by the probes themselves: `citadel-proxy health` and the status
# routes load this module, and the two libraries cost ~130 ms of start-up where they are not used.


class ProbeFailed(Exception):
    """The server did not answer; str() says why, in words fit for a health report."""


async def probe_database(database: Database, timeout_s: float) -> float:
    """`SELECT 1` on a new connection; returns the round trip in milliseconds."""
    import psycopg

    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s * 2):
            conn = await psycopg.AsyncConnection.connect(
                database.conninfo(), connect_timeout=max(1, int(timeout_s)), autocommit=True
            )
            async with conn:
                await conn.execute("SELECT 1")
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise ProbeFailed(f"PostgreSQL: {str(exc).strip()[:200] or type(exc).__name__}") from None
    return elapsed_ms(started)


async def probe_redis(settings: RedisSettings, timeout_s: float) -> float:
    """`PING` on a short-lived client; returns the round trip in milliseconds."""
    from redis.exceptions import RedisError

    from citadel_proxy.redis_client import redis_client

    started = time.perf_counter()
    client = redis_client(settings, timeout_s=timeout_s)
    try:
        async with asyncio.timeout(timeout_s * 2):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise ProbeFailed(f"Redis at {settings.host}:{settings.port}: {reason(exc)}"[:200]) from None
    finally:
        await client.aclose()
    return elapsed_ms(started)


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a perf_counter reading), to two decimals."""
    return round((time.perf_counter() - started) * 1000, 2)
