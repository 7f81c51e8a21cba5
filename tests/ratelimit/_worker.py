"""A separate gateway process's limiter, for the test that two processes share one Redis limit.

python -m tests.ratelimit._worker REDIS_URL PREFIX IDENTITY RPM ATTEMPTS   -> prints how many were admitted
"""

from __future__ import annotations

import asyncio
import sys

from citadel_proxy.ratelimit import Limits, RedisLimiter
from tests.ratelimit.conftest import redis_client


async def main(url: str, prefix: str, identity: str, rpm: int, attempts: int) -> None:
    client = redis_client(url)
    try:
        limiter = RedisLimiter(client, prefix)
        sys.stdin.readline()  # start together: the test releases both processes at once
        admitted = 0
        for _ in range(attempts):
            decision = await limiter.acquire(identity, Limits(requests_per_minute=rpm))
            assert decision.backend == "redis", decision
            admitted += decision.allowed
        sys.stdout.write(f"{admitted}\n")
    finally:
        await client.aclose()


if __name__ == "__main__":
    url, prefix, identity, rpm, attempts = sys.argv[1:]
    asyncio.run(main(url, prefix, identity, int(rpm), int(attempts)))
