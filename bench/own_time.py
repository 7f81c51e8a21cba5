"""Where a chat's CPU goes, by Python function, variant against variant (`bench.stage_cpu --py-spy`).

py-spy samples each variant's worker while the same load runs; a function's share of the samples taken
in it (its own time: the leaf of the sampled stack, native code called from it included) times the
worker's CPU a chat in that run is what the function costs a chat, in µs. Side by side, the functions
whose cost differs most between the first variant and the last: `full` against `bare` is where the
stages' CPU goes, function by function. The event loop's own work (uvloop's C code: the system calls,
reading the sockets) is `Runner.run`'s own time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.profile import Entry


@dataclass(frozen=True)
class Profiled:
    """One variant's sampled run: what its worker spent a chat, and on which functions."""

    variant: str
    cpu_us: float  # the worker's CPU a chat over the sampled run
    samples: int
    own_us: dict[str, float]  # function -> own time a chat, µs

    @classmethod
    def of(cls, variant: str, entries: Sequence[Entry], samples: int, cpu_us: float) -> Profiled:
        return cls(variant, cpu_us, samples, {e.function: e.own_pct * cpu_us / 100 for e in entries})


def table(found: Sequence[Profiled], count: int = 30) -> list[str]:
    """The `count` functions whose own time a chat differs most between the first variant and the last,
    each variant's figure beside the difference; then what the rest of the functions add up to."""
    first, last = found[0], found[-1]
    names = set().union(*(p.own_us for p in found))

    def difference(function: str) -> float:
        return first.own_us.get(function, 0.0) - last.own_us.get(function, 0.0)

    top = sorted(names, key=lambda function: (-abs(difference(function)), function))[:count]
    width = max(10, *(len(p.variant) for p in found))
    lines = [
        f"own time a chat by Python function (py-spy), µs; {first.variant} - {last.variant} first",
        f"{'diff':>8} " + " ".join(f"{p.variant:>{width}}" for p in found) + "  function",
    ]
    for function in top:
        cells = " ".join(f"{p.own_us.get(function, 0.0):>{width}.2f}" for p in found)
        lines.append(f"{difference(function):>+8.2f} {cells}  {function}")
    rest = [sum(v for f, v in p.own_us.items() if f not in top) for p in found]
    cells = " ".join(f"{value:>{width}.2f}" for value in rest)
    lines.append(f"{rest[0] - rest[-1]:>+8.2f} {cells}  (every other function)")
    cells = " ".join(f"{p.cpu_us:>{width}.2f}" for p in found)
    lines.append(f"{first.cpu_us - last.cpu_us:>+8.2f} {cells}  (the worker's CPU a chat)")
    lines.append("samples: " + ", ".join(f"{p.variant} {p.samples}" for p in found))
    return lines
