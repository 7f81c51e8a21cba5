"""py-spy on the one-worker gateway under load: the functions that cost the most own time."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.loadgen import LoadProcess
from bench.scenarios import Budget, Scenario, Target, job_for

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    function: str
    own_pct: float
    total_pct: float


def profile(
    py_spy: str, load: LoadProcess, target: Target, scenario: Scenario, seconds: float, out: Path
) -> tuple[list[Entry], int]:
    """Sample `target` for `seconds` while `scenario` runs against it, py-spy's raw stacks written to
    `out`; entries sorted by own time."""
    job = job_for(target, scenario, Budget(seconds + 1.0, 10**9, 0, 0))
    entries, samples, _ = record(py_spy, target.server.popen.pid, seconds, out, lambda: load.run(job))
    return entries, samples


def record(
    py_spy: str, pid: int, seconds: float, out: Path, run_load: Callable[[], T], rate: int | None = None
) -> tuple[list[Entry], int, T]:
    """Sample process `pid` for `seconds` while `run_load` runs (it should last a second longer, so that
    every sample sees the process busy); py-spy's raw stacks written to `out`. The entries by own time,
    the samples, and what `run_load` returned. `rate`: samples a second (py-spy's own default, 100)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(out)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    loaded = run_load()
    _, err = spy.communicate(timeout=seconds + 30)
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
    return (*collapse(out.read_text()), loaded)


def collapse(text: str) -> tuple[list[Entry], int]:
    """Own time = the leaf frame of each sampled stack; total time = any stack the function is on."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    entries = [
        Entry(function, 100 * n / samples, 100 * total[function] / samples)
        for function, n in own.most_common()
    ]
    return entries, samples


def format_top(entries: list[Entry], samples: int, count: int = 15) -> str:
    lines = [f"{'own %':>6} {'total %':>7}  function  ({samples} samples)"]
    lines += [f"{e.own_pct:6.1f} {e.total_pct:7.1f}  {e.function}" for e in entries[:count]]
    return "\n".join(lines)
