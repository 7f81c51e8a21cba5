"""Issue 17's sections with processes of their own: `workers` (bench/workers.py), `tls` (bench/tls_front.py),
`instructions` (bench/instructions.py: the every-stage ratio counted by callgrind, about 3 minutes).

They run after the main table, once its targets are stopped, each with a fake Ollama and gateways of
its own; in a full run (not with --quick) or when named in --scenarios.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import instructions, tls_front, workers
from bench.scenarios import Budget

NAMES = (workers.NAME, tls_front.NAME, instructions.NAME)
# Seconds per run: each section takes about a minute in a full run (3 rounds).
WORKERS_S = {False: 2.5, True: 1.0}
TLS_BUDGET = {False: Budget(0.6, 6000, 0, 0), True: Budget(0.3, 1500, 0, 0)}


def wanted(scenarios: str | None, quick: bool) -> list[str]:
    """The sections named in --scenarios; without it, all of them (none with --quick)."""
    if scenarios:
        named = {p.strip() for p in scenarios.split(",")}
        return [name for name in NAMES if name in named]
    return [] if quick else list(NAMES)


@dataclass
class Sections:
    lines: list[str] = field(default_factory=list)
    json: dict[str, object] = field(default_factory=dict)


def run(names: list[str], rounds: int, quick: bool) -> Sections:
    out = Sections()
    if workers.NAME in names:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-workers-")))
            scaling = workers.run(workdir, stack, rounds, WORKERS_S[quick])
        summary = workers.summarise(scaling)
        out.lines += [
            "",
            f"Worker scaling (issue 17, item 3): uv-1w vs uv-2w, chat c{workers.CONCURRENCY}, medians of"
            f" {rounds} interleaved round(s) (spread min-max); 'free' unpinned, '1 core' = gateway on CPU 0,"
            " generator and fake on the others:",
            *("  " + line for line in workers.lines(summary)),
            *(f"note: {note}" for note in scaling.notes),
        ]
        out.json[workers.NAME] = {
            "summary": summary.to_json(),
            "samples": [sample.to_json() for sample in scaling.samples],
            "notes": scaling.notes,
        }
    if tls_front.NAME in names:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-tls-")))
            front = tls_front.run(workdir, stack, rounds, TLS_BUDGET[quick])
        found = tls_front.rows(front)
        out.lines += [
            "",
            f"The shipped nginx site with TLS in front (issue 17, item 5), medians of {rounds} round(s);"
            " times in ms; '+direct' vs the fake alone, '+front' vs the same back end without nginx;"
            " CPU in ms per request:",
            *("  " + line for line in tls_front.lines(found, front.handshake)),
            *(f"note: {note}" for note in front.notes),
        ]
        out.json[tls_front.NAME] = {
            "rows": [row.to_json() for row in found],
            "handshake": None if front.handshake is None else front.handshake.__dict__,
            "samples": [sample.__dict__ for sample in front.samples],
            "notes": front.notes,
        }
    if instructions.NAME in names:
        notes: list[str] = []
        ratio = instructions.section(notes)
        out.lines += ["", *(ratio.lines() if ratio else []), *(f"note: {note}" for note in notes)]
        out.json[instructions.NAME] = {**(ratio.to_json() if ratio else {}), "notes": notes}
    return out
