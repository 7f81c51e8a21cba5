"""The embedded audit store's file: one SQLite connection per thread of its own, WAL, schema kept current.

sqlite3 connections belong to the thread that opened them, so each `SqliteFile` runs every call on one
dedicated thread; the writer and the reader hold one each, and WAL lets the reader read while the
writer writes (other worker processes open the same file, and wait for its lock up to `timeout_s`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import re
import sqlite3
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

from citadel_proxy.config.schema import AuditOptions, Config

T = TypeVar("T")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def sqlite_path(config: Config, options: AuditOptions | None = None) -> Path:
    """The embedded store's file (used when `database` is null)."""
    return Path(config.paths.data) / ((options or config.audit).sqlite_path or "audit.sqlite3")


def sqlite_migrations() -> list[tuple[int, str]]:
    """(version, SQL) of the embedded store's schema steps, in order; `PRAGMA user_version` says which ran."""
    folder = resources.files("citadel_proxy.audit").joinpath("migrations").joinpath("sqlite")
    found = [(_NAME.match(e.name), e) for e in folder.iterdir()]
    return sorted((int(m[1]), e.read_text(encoding="utf-8")) for m, e in found if m)


def migrate_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply the missing schema steps, each in its own transaction; returns the versions applied."""
    applied = []
    for version, script in sqlite_migrations():
        # IMMEDIATE: two workers starting at once take turns; the second sees the first's version.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < version:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version:d}")
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


def _statements(script: str) -> list[str]:
    """The statements of a migration (they hold no `;` inside literals)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, every commit fsync'd."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed batch survives a power cut, as the spool segment it may replace would have.
    conn.execute("PRAGMA synchronous = FULL")
    # The stub knows one-argument aggregates of integers only.
    conn.create_aggregate("percentile_cont", 2, _PercentileCont)  # type: ignore[arg-type]
    return conn


class _PercentileCont:
    """PostgreSQL's `percentile_cont(f) WITHIN GROUP (ORDER BY x)` as `percentile_cont(x, f)`."""

    def __init__(self) -> None:
        self._values: list[float] = []
        self._fraction = 0.5

    def step(self, value: float | None, fraction: float) -> None:
        self._fraction = fraction
        if value is not None:
            self._values.append(value)

    def finalize(self) -> float | None:
        if not self._values:
            return None
        values = sorted(self._values)
        position = self._fraction * (len(values) - 1)
        low, high = math.floor(position), math.ceil(position)
        return values[low] + (values[high] - values[low]) * (position - low)


class SqliteFile:
    """Runs functions of a connection to `path` on the connection's own thread, one at a time."""

    def __init__(self, path: Path, *, timeout_s: float, name: str) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = connect(self.path, self._timeout_s)
        return fn(self._conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(connection) on the thread; a caller that stops waiting leaves it to finish there."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, fn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)
