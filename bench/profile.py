"""py-spy on the one-worker gateway under load: the functions that cost the most own time."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadProcess
from bench.scenarios import Budget, Scenario, Target, job_for


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
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy, "record", "--pid", str(target.server.popen.pid), "--duration", str(int(seconds))]
    argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The load outlasts the sampling by a second so every sample sees the gateway busy.
    load.run(job_for(target, scenario, Budget(seconds + 1.0, 10**9, 0, 0)))
    _, err = spy.communicate(timeout=seconds + 30)
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
    return collapse(out.read_text())


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
