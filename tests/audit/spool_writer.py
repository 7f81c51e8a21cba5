"""Child process of the crash tests: submits records through a real sink, prints each id once its submit
returned, then waits to be killed.

python tests/audit/spool_writer.py CONFIG_JSON SPOOL_DIR COUNT [DURABILITY]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import msgspec

from citadel_proxy.audit import AuditOptions, open_audit
from citadel_proxy.config.schema import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.audit.conftest import record


async def main(config: Config, spool_dir: str, count: int, durability: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        options = AuditOptions(spool_dir=spool_dir, retry_s=3600, durability=durability, linger_s=0.2)  # type: ignore[arg-type]
        sink = await open_audit(config, stack, options)
        for n in range(count):
            rec = record(n)
            await sink.submit(
                rec
            )  # durable from here on (spooled: the database is down, or durability spool)
            sys.stdout.write(rec.id + "\n")
            sys.stdout.flush()
        sys.stdout.write("spooled\n")
        sys.stdout.flush()
        await asyncio.sleep(3600)  # the parent kills us with SIGKILL: no shutdown, no drain


if __name__ == "__main__":
    loaded = msgspec.json.decode(Path(sys.argv[1]).read_bytes(), type=Config)
    asyncio.run(main(loaded, sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "queue"))
