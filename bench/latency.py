"""Issue 17, scenario 1: the latency the gateway adds against concurrency, with a fake that takes its time.

Non-streaming chat answered after 60 ms (`timed-60-0`) and voice streams with 50 ms to the first token
then 64 tokens 10 ms apart (`timed-50-10`, 690 ms a stream), at concurrency 1, 4, 16, 64 and 256, each
connection sending its next request as soon as an answer ends. uv-full (uvicorn, one worker, the
repository's pipelines with every stage: audit to PostgreSQL, rate limits in Redis, auth, metrics) is
measured against the fake directly, the same cell in the same round, the two in turn (who goes first
alternates by round). Added = gateway minus direct, per round; reported as the median of rounds with the
smallest and largest. Each cell runs twice a round: with every CPU shared (the gateway, the fake, the load
generator, PostgreSQL and Redis wherever the scheduler puts them) and with the gateway on a core of its
own (bench/cpus.py; the direct run beside it has the same placement), to tell the gateway's own tail
from its waits for a core that another process holds. A cell runs long enough for SAMPLES answers where
that fits between the least and the most seconds a cell may take; at c1 a voice stream takes 690 ms, so
there its p99 rests on a handful of answers (the table says how many: under 100, a p99 is the largest or
nearly).

The bare gateway (uv-1w: the same server and pipeline core with no stage) runs beside uv-full in every
cell and round as its floor: what the machine itself leaves of the targets. Where uv-1w misses a target
too, no cut in the stages can meet it on that machine (README, Performance).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench.cpus import OWN_CORE, SHARED, own_core, split
from bench.full import PG_PORT, REDIS
from bench.loadgen import Job, LoadProcess, Result
from bench.measure import percentile, settle
from bench.procs import Server
from bench.report import Check
from bench.scale import BARE_NAME, FULL_NAME, Gateway, Spread, log, start_fake_for, start_gateways
from bench.scenarios import SSE_TOKEN

CONCURRENCY = (1, 4, 16, 64, 256)
DIRECT = "direct"
TTFT_P99_UP_TO_C64_MS = 2.0
TTFT_P99_C256_MS = 10.0
_MESSAGES = [{"role": "user", "content": "Say something."}]
_TOKENS = 64


@dataclass(frozen=True)
class Kind:
    name: str
    path: str  # the gateway's route
    model: str  # procs.TIMED_MODELS: the fake's timing
    stream: bool
    seconds: float  # what one answer takes at the fake: sizes the runs


KINDS = (
    Kind("chat", "/v1/chat/completions", "timed-60-0", False, 0.060),
    Kind("voice", "/v1/voice/chat/completions", "timed-50-10", True, 0.050 + 0.010 * _TOKENS),
)


@dataclass(frozen=True)
class Plan:
    """How long each cell runs: long enough for `samples` answers, within [least_s, most_s]."""

    samples: int
    least_s: float
    most_s: float

    def seconds(self, kind: Kind, concurrency: int) -> float:
        return min(self.most_s, max(self.least_s, self.samples * kind.seconds / concurrency))


FULL_PLAN = Plan(samples=100, least_s=1.0, most_s=4.0)
QUICK_PLAN = Plan(samples=20, least_s=0.5, most_s=1.5)


@dataclass(frozen=True)
class Run:
    """One cell on one target in one round (times in ms)."""

    cell: str
    target: str
    round: int
    answers: int
    errors: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    cpu_percent: float  # the gateway's CPU over the run (one core = 100); the fake's for direct
    placement: str = SHARED  # bench/cpus.py


@dataclass(frozen=True)
class Row:
    """One cell and target over rounds: added = the target (uv-full) minus direct in the same round."""

    cell: str
    placement: str
    target: str
    rounds: int
    answers_per_round: int  # the fewest answers one target's p99 rests on in a round
    errors: int
    direct_ttft_p50_ms: Spread
    direct_total_p50_ms: Spread
    added_ttft_p50_ms: Spread
    added_ttft_p99_ms: Spread
    added_total_p50_ms: Spread
    added_total_p99_ms: Spread
    gateway_cpu_percent: Spread


def cell_name(kind: Kind, concurrency: int) -> str:
    return f"{kind.name} c{concurrency}"


def job(kind: Kind, concurrency: int, seconds: float, port: int, gateway: Gateway | None) -> Job:
    if gateway is None:
        body = {
            "model": kind.model + ":latest",
            "messages": _MESSAGES,
            "stream": kind.stream,
            "options": {"num_predict": _TOKENS},
        }
        path, marker, headers = "/api/chat", b"", b""
    else:
        body = {"model": kind.model, "messages": _MESSAGES, "max_tokens": _TOKENS, "stream": kind.stream}
        path, marker, headers = kind.path, SSE_TOKEN if kind.stream else b"", gateway.headers
    encoded = json.dumps(body, separators=(",", ":")).encode()
    # Closed loop: the budget in requests never binds, the seconds do.
    stagger = kind.seconds if concurrency > 1 else 0.0
    return Job(
        port, path, encoded, concurrency, 10_000_000, seconds, marker, headers=headers, stagger_s=stagger
    )


def run_cell(
    load: LoadProcess, target: str, server: Server, job_: Job, cell: str, round_: int, placement: str
) -> Run:
    before = server.usage()
    result: Result = load.run(job_)
    after = server.usage()
    cpu = (after.cpu_s - before.cpu_s) / result.elapsed_s * 100 if result.elapsed_s else float("nan")
    return Run(
        cell=cell,
        target=target,
        round=round_,
        answers=len(result.total),
        errors=result.errors,
        ttft_p50_ms=percentile(result.ttft, 0.50) * 1000,
        ttft_p99_ms=percentile(result.ttft, 0.99) * 1000,
        total_p50_ms=percentile(result.total, 0.50) * 1000,
        total_p99_ms=percentile(result.total, 0.99) * 1000,
        cpu_percent=cpu,
        placement=placement,
    )


def placements() -> tuple[str, ...]:
    """Shared, and the gateway on a core of its own where the machine has two CPUs or more."""
    return (SHARED, OWN_CORE) if split(set(os.sched_getaffinity(0))) else (SHARED,)


# A target's name, its server, and the gateway it is (None: the fake, measured directly).
Target = tuple[str, Server, Gateway | None]


@dataclass
class Cells:
    """Runs cells through `targets` in turn: the load generator, what `own core` pins to CPU 0 (the
    gateways' servers) and to the other CPUs (the generator and the fake, with PostgreSQL and Redis)."""

    load: LoadProcess
    targets: list[Target]
    gateways: list[Server]
    harness: list[psutil.Process]
    notes: set[str] = field(default_factory=set)  # what could not be pinned

    def warm(self, kinds: Iterable[Kind], concurrency: int) -> None:
        """Pools filled and code imported on every target before anything counts."""
        for _, server, through in self.targets:
            for kind in kinds:
                self.load.run(job(kind, concurrency, 0.3, server.port, through))

    def round(
        self,
        kind: Kind,
        concurrency: int,
        seconds: float,
        placement: str,
        round_: int,
        rounds: int,
        label: str,
    ) -> list[Run]:
        """One run of the cell per target, the order reversed every other round."""
        cell = cell_name(kind, concurrency)
        found = []
        for name, server, through in self.targets if round_ % 2 else self.targets[::-1]:
            job_ = job(kind, concurrency, seconds, server.port, through)
            with contextlib.ExitStack() as placed:
                if placement == OWN_CORE:
                    gateways = [p for s in self.gateways for p in s.processes()]
                    pinned = own_core(gateways, self.harness, (PG_PORT, REDIS[1]))
                    self.notes.update(placed.enter_context(pinned).notes)
                run = run_cell(self.load, name, server, job_, cell, round_, placement)
            found.append(run)
            log(f"{label} round {round_}/{rounds} {cell:10} {placement:8} {_line(run)}")
            settle(0.1)
        return found


def floor_for(gateway_name: str) -> str | None:
    """The gateway measured beside `gateway_name` as its floor: uv-1w beside uv-full, none beside uv-1w."""
    return BARE_NAME if gateway_name == FULL_NAME else None


def measure(
    quick: bool, rounds: int, notes: list[str], gateway_name: str = FULL_NAME
) -> tuple[list[Run], list[Row]]:
    """`gateway_name`: uv-full (the issue's, with uv-1w beside it as its floor), or uv-1w alone."""
    plan = QUICK_PLAN if quick else FULL_PLAN
    runs: list[Run] = []
    floor = floor_for(gateway_name)
    names = [gateway_name] if floor is None else [gateway_name, floor]
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-latency-")))
        log(f"latency: starting a fake Ollama and {', '.join(names)}")
        fake = start_fake_for(stack, workdir, "fake-latency")
        gateways = start_gateways(stack, workdir, names, fake.port, 256, notes, "-latency")
        gateway = gateways.get(gateway_name)
        if gateway is None:
            notes.append(f"latency: no {gateway_name} (PostgreSQL or Redis missing): scenario skipped")
            return [], []
        load = LoadProcess()
        stack.callback(load.close)
        targets: list[Target] = [(DIRECT, fake, None)]
        targets += [(name, gateways[name].server, gateways[name]) for name in names if name in gateways]
        servers = [target[1] for target in targets[1:]]
        cells = Cells(load, targets, servers, [psutil.Process(load.process.pid), *fake.processes()])
        cells.warm(KINDS, CONCURRENCY[-1])
        placed_as = placements()
        for round_ in range(1, rounds + 1):
            for kind in KINDS:
                for concurrency in CONCURRENCY:
                    seconds = plan.seconds(kind, concurrency)
                    for placement in placed_as:
                        runs += cells.round(kind, concurrency, seconds, placement, round_, rounds, "latency")
        notes.extend(f"latency, {OWN_CORE}: {note}" for note in sorted(cells.notes))
    return runs, rows(runs)


def _line(run: Run) -> str:
    return (
        f"{run.target:7} n {run.answers:5}  ttft p50/p99 {run.ttft_p50_ms:7.2f} {run.ttft_p99_ms:7.2f}"
        f"  total p50/p99 {run.total_p50_ms:7.2f} {run.total_p99_ms:7.2f}"
        f"  cpu {run.cpu_percent:3.0f}%  errors {run.errors}"
    )


def rows(runs: list[Run]) -> list[Row]:
    """Each cell, placement and target (but direct) over its rounds, against direct in the same round."""
    direct = {(r.cell, r.placement, r.round): r for r in runs if r.target == DIRECT}
    found = []
    measured = dict.fromkeys((r.cell, r.placement, r.target) for r in runs if r.target != DIRECT)
    for cell, placement, target in measured:
        pairs = [
            (r, direct[(cell, placement, r.round)])
            for r in runs
            if (r.cell, r.placement, r.target) == (cell, placement, target)
            and (cell, placement, r.round) in direct
        ]
        if not pairs:
            continue

        def added(field: str, pairs: list[tuple[Run, Run]] = pairs) -> Spread:
            return Spread.of(getattr(g, field) - getattr(d, field) for g, d in pairs)

        found.append(
            Row(
                cell=cell,
                placement=placement,
                target=target,
                rounds=len(pairs),
                answers_per_round=min(min(g.answers, d.answers) for g, d in pairs),
                errors=sum(g.errors + d.errors for g, d in pairs),
                direct_ttft_p50_ms=Spread.of(d.ttft_p50_ms for _, d in pairs),
                direct_total_p50_ms=Spread.of(d.total_p50_ms for _, d in pairs),
                added_ttft_p50_ms=added("ttft_p50_ms"),
                added_ttft_p99_ms=added("ttft_p99_ms"),
                added_total_p50_ms=added("total_p50_ms"),
                added_total_p99_ms=added("total_p99_ms"),
                gateway_cpu_percent=Spread.of(g.cpu_percent for g, _ in pairs),
            )
        )
    # The gateway under test before its floor (uv-1w), each placement apart.
    return sorted(found, key=lambda r: (r.placement != SHARED, r.target == BARE_NAME))


def checks(found: list[Row], target: str = FULL_NAME) -> list[Check]:
    """Both targets for each placement measured: every CPU shared, and the gateway on a core of its own.
    `target`: the gateway measured (the issue's targets are uv-full's; uv-1w's say what the stages add).
    Then the same targets for the floor measured beside it (`floor_for`), where its rows are there: a
    miss on that line is the machine's, not the stages'."""
    listed = _checks_of(found, target, floor=False)
    floor = floor_for(target)
    if floor is not None:
        listed += _checks_of(found, floor, floor=True)
    return listed


def _checks_of(rows: list[Row], target: str, *, floor: bool) -> list[Check]:
    """`target`'s checks from its own rows; a floor's lines name it in their goal and say what it is."""
    found = [r for r in rows if r.target == target]
    named = f" ({target}: no stage, the floor)" if floor else ""

    def worst(rows_: list[Row]) -> tuple[float | None, str]:
        kept = [r for r in rows_ if r.added_ttft_p99_ms.median == r.added_ttft_p99_ms.median]
        if not kept:
            return None, "nothing measured"
        row = max(kept, key=lambda r: r.added_ttft_p99_ms.median)
        return row.added_ttft_p99_ms.median, f"{target}, worst cell {row.cell}, median of rounds{named}"

    listed = []
    for placement in dict.fromkeys(r.placement for r in found):
        placed = [r for r in found if r.placement == placement]
        low = [r for r in placed if int(r.cell.rsplit("c", 1)[1]) <= 64]
        high = [r for r in placed if int(r.cell.rsplit("c", 1)[1]) > 64]
        up_to, where_low = worst(low)
        at, where_high = worst(high)
        where = ("" if placement == SHARED else f", {OWN_CORE}") + (f", {target}" if floor else "")
        listed += [
            Check(f"added TTFT p99, c1 to c64{where}", up_to, TTFT_P99_UP_TO_C64_MS, False, "ms", where_low),
            Check(f"added TTFT p99, c256{where}", at, TTFT_P99_C256_MS, False, "ms", where_high),
        ]
    return listed


def table(found: list[Row]) -> list[str]:
    heads = ("added ttft p50", "added ttft p99", "added total p50", "added total p99")
    head = f"{'cell':10} {'cpus':8} {'target':7} {'n/round':>7} {'direct ttft p50':>15} "
    head += " ".join(f"{h:>25}" for h in heads) + f" {'gw cpu %':>12} {'errors':>6}"
    lines = [head, "-" * len(head)]
    for r in found:
        added = (r.added_ttft_p50_ms, r.added_ttft_p99_ms, r.added_total_p50_ms, r.added_total_p99_ms)
        lines.append(
            f"{r.cell:10} {r.placement:8} {r.target:7} {r.answers_per_round:7d}"
            f" {r.direct_ttft_p50_ms.median:15.2f} "
            + " ".join(f"{a.text():>25}" for a in added)
            + f" {r.gateway_cpu_percent.text(sign=False, digits=0):>12} {r.errors:6d}"
        )
    return lines


def to_json(runs: list[Run], found: list[Row], listed: list[Check]) -> dict[str, object]:
    return {
        "rows": [asdict(r) for r in found],
        "runs": [asdict(r) for r in runs],
        "checks": [{**asdict(c), "verdict": c.verdict} for c in listed],
    }
