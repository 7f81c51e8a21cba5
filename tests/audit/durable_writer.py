"""Child process of test_durability: submits records with durability "spool" and a healthy database,
prints each id as its submit returns, and waits to be killed.

python tests/audit/durable_writer.py CONFIG_JSON SPOOL_DIR COUNT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from citadel_proxy.audit.options import AuditOptions
from citadel_proxy.audit.service import open_audit
from citadel_proxy.config.schema import Config
from tests.audit.conftest import record


async def main(config: Config, spool_dir: str, count: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        options = AuditOptions(spool_dir=spool_dir, durability="spool", linger_s=0.2)
        sink = await open_audit(config, stack, options)
        for n in range(count):
            rec = record(n)
            await sink.submit(rec)  # durable from here on, whatever happens to this process
            sys.stdout.write(rec.id + "\n")
            sys.stdout.flush()
        sys.stdout.write("submitted\n")
        sys.stdout.flush()
        await asyncio.sleep(3600)  # killed with SIGKILL by the parent: no drain, no shutdown


if __name__ == "__main__":
    loaded = msgspec.json.decode(Path(sys.argv[1]).read_bytes(), type=Config)
    asyncio.run(main(loaded, sys.argv[2], int(sys.argv[3])))
