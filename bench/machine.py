"""What the bench ran on, beyond a CPU count: the processor and its caches.

Sessions get machines of different kinds (AMD and Intel guests of the same size), and the ratios the
bench checks move with the kind, not only with the code: the processor's model and each level's cache
size go beside the figures, in the table's header and the JSON.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")
_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class Cache:
    """One level of the first CPU's caches, as the kernel lists it."""

    level: int
    kind: str  # Data, Instruction, Unified
    size: str  # as the kernel writes it, e.g. 2048K
    shared_by: str  # the CPUs that share it, e.g. 0-1

    @property
    def name(self) -> str:
        suffix = {"Data": "d", "Instruction": "i"}.get(self.kind, "")
        return f"L{self.level}{suffix}"


@dataclass(frozen=True)
class Machine:
    cpus: int
    model: str
    virtual: bool
    caches: tuple[Cache, ...]
    python: str
    platform: str

    def line(self) -> str:
        """`2 CPUs, Intel(R) Xeon(R) Processor (virtual; L1d 48K, L1i 64K, L2 2048K, L3 516096K shared
        by 0-1), Python 3.11.7`."""
        caches = ", ".join(
            f"{cache.name} {cache.size}" + (f" shared by {cache.shared_by}" if cache.shared_by != "0" else "")
            for cache in self.caches
        )
        inside = "; ".join(part for part in ("virtual" if self.virtual else "", caches) if part)
        about = f" ({inside})" if inside else ""
        return f"{self.cpus} CPUs, {self.model}{about}, Python {self.python}"

    def to_json(self) -> dict[str, object]:
        return {
            "cpus": self.cpus,
            "model": self.model,
            "virtual": self.virtual,
            "caches": {
                cache.name: {"size": cache.size, "shared_by": cache.shared_by} for cache in self.caches
            },
            "python": self.python,
            "platform": self.platform,
        }


def cpu_model(cpuinfo: str) -> tuple[str, bool]:
    """The first processor's model name ('unknown' where the file has none) and whether the CPU says
    it runs under a hypervisor (its `hypervisor` flag)."""
    model, virtual = "unknown", False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags":
            virtual = "hypervisor" in value.split()
            break
    return model, virtual


def caches(folder: Path = _CACHES) -> tuple[Cache, ...]:
    """The first CPU's caches, lowest level first; none where the kernel does not list them."""
    found = []
    for index in sorted(folder.glob("index*")):
        try:
            found.append(
                Cache(
                    int((index / "level").read_text()),
                    (index / "type").read_text().strip(),
                    (index / "size").read_text().strip(),
                    (index / "shared_cpu_list").read_text().strip(),
                )
            )
        except (OSError, ValueError):
            continue
    return tuple(sorted(found, key=lambda cache: (cache.level, cache.kind)))


def describe() -> Machine:
    try:
        model, virtual = cpu_model(_CPUINFO.read_text())
    except OSError:
        model, virtual = platform.processor() or "unknown", False
    return Machine(
        os.cpu_count() or 0, model, virtual, caches(), platform.python_version(), platform.platform()
    )
