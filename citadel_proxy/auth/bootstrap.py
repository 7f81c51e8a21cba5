"""The first admin key: made on first start when none exists, handed over in a file only its owner reads."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from citadel_proxy.auth.keys import generate_key, looks_like_key
from citadel_proxy.auth.store import KeyStore
from citadel_proxy.errors import InvalidRequest, ServiceUnavailable

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin.key"
ADMIN_KEY_NAME = "admin"


async def bootstrap_admin_key(config: Any, store: KeyStore) -> Path | None:
    """Create an admin key if there is none; returns the file holding it, or None when one existed.

    Workers of one gateway start together: an exclusive lock on a file in the data directory lets one
    of them create the key while the others wait and then find it. Gateways on other hosts that share
    the database have their own data directories: when one of them registers its key first, ours is
    refused as a duplicate, our never-valid key file is removed, and this start goes on with theirs.
    """
    data = Path(config.paths.data)
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True, mode=0o700)
    lock_fd = await asyncio.to_thread(os.open, data / ".bootstrap.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
        if await store.has_admin():
            return None
        path = data / ADMIN_KEY_FILE
        key, written = await asyncio.to_thread(_write_new_or_read, path)
        try:
            await store.create(ADMIN_KEY_NAME, ["admin"], key=key)
        except InvalidRequest:
            if not await store.has_admin():
                raise
            if written:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            log.warning("another gateway sharing the database created the first admin key first")
            return None
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock
    log.warning("created the first admin API key; it is in %s (readable by this user only)", path)
    return path


def _write_new_or_read(path: Path) -> tuple[str, bool]:
    """A fresh key written to a new 0600 file (True); or, if a previous start wrote the file but did not
    get to store the key's digest, that same key (False), so the operator's copy stays the valid one."""
    key = generate_key()
    try:
        # O_EXCL with the mode given at creation: the file is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = path.read_text().strip()
        if not looks_like_key(existing) or path.stat().st_mode & 0o077:
            raise ServiceUnavailable(
                f"{path} exists but no admin key is registered; move it away to create a new one"
            ) from None
        return existing, False
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key, True
