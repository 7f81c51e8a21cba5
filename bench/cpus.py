"""Where a measurement's processes run: every CPU shared, or the gateway on a core of its own.

On a small machine the load generator, the fake Ollama, PostgreSQL and Redis take turns on the same cores
as the gateway, so a wall-clock percentile also counts the time the gateway waited for one of them to
give its core back, and its CPU per request counts the caches they emptied. In production none of those
run beside the gateway. `own_core` pins the gateway's processes to CPU 0 and everything else the run uses
(the harness's processes, and the PostgreSQL and Redis servers the bench talks to, found by their
listening ports) to the other CPUs, and puts every affinity back as it was afterwards. Pinning servers
the bench did not start needs the right to (root, or their owner); without it they stay where they are
and the run says so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psutil

from bench.procs import tree

SHARED = "shared"
OWN_CORE = "own core"


@dataclass
class Pinned:
    """Affinities changed by `own_core`, to put back; `notes`: what could not be pinned, and why."""

    before: dict[int, set[int]] = field(default_factory=dict)  # thread id: its CPUs before
    notes: list[str] = field(default_factory=list)

    def pin(self, processes: Iterable[psutil.Process], cpus: set[int]) -> None:
        """Every thread of `processes` onto `cpus` (a process's affinity is its threads')."""
        for tid in thread_ids(processes):
            self._set(tid, cpus)

    def _set(self, tid: int, cpus: set[int]) -> None:
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            now = os.sched_getaffinity(tid)
            if now != cpus:
                os.sched_setaffinity(tid, cpus)
                self.before.setdefault(tid, now)

    def restore(self) -> None:
        for tid, cpus in self.before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)
        self.before.clear()


def thread_ids(processes: Iterable[psutil.Process]) -> list[int]:
    """The ids of every thread of `processes` (none of a process that has ended)."""
    found: list[int] = []
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            found += [thread.id for thread in proc.threads()]
    return found


def listening(port: int) -> psutil.Process | None:
    """The process listening on TCP `port` on this machine (None if none, or it cannot be told)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def split(cpus: set[int]) -> tuple[set[int], set[int]] | None:
    """(the gateway's CPU, the others'): the lowest CPU, and the rest; None with fewer than two."""
    if len(cpus) < 2:
        return None
    first = min(cpus)
    return {first}, cpus - {first}


@contextlib.contextmanager
def own_core(
    gateway: Iterable[psutil.Process], harness: Iterable[psutil.Process], service_ports: Iterable[int]
) -> Iterator[Pinned]:
    """The gateway's processes on one CPU, `harness` and the servers listening on `service_ports` (with
    their children: PostgreSQL's backends) on the rest, for the `with` block. A PostgreSQL backend forked
    meanwhile inherits the pinned mask: the servers' trees are read again when putting things back.
    """
    pinned = Pinned()
    cpus = split(set(os.sched_getaffinity(0)))
    if cpus is None:
        pinned.notes.append("one CPU only: nothing pinned")
        yield pinned
        return
    mine, others = cpus
    servers = []
    for port in service_ports:
        found = listening(port)
        if found is None:
            pinned.notes.append(f"the server on port {port} not pinned: no process of it could be seen")
        else:
            servers.append(found)
    try:
        pinned.pin(gateway, mine)
        pinned.pin(harness, others)
        for server in servers:
            try:
                pinned.pin(tree(server), others)
            except PermissionError:
                pinned.notes.append(f"{server.name()} (pid {server.pid}) not pinned: not permitted")
        yield pinned
    finally:
        for server in servers:  # backends forked while pinned get the mask their parent had
            parent = pinned.before.get(server.pid)
            if parent is None:
                continue
            for tid in thread_ids(tree(server)):
                pinned.before.setdefault(tid, parent)
        pinned.restore()
