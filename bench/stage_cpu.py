"""`python -m bench.stage_cpu`: what a chat costs a gateway's worker in CPU, variant against variant.

`bench.instructions` counts instructions (callgrind), which nothing else on the machine moves; this reads
the CPU the worker itself spends at full speed, which is what the `make bench` ratio of every stage to
the bare pipeline compares. Chat against a fake Ollama that answers at once, `--concurrency` requests
kept in flight; the variants of `bench.variants` (bare, full, full-STAGE, full@SECONDS, any of them
+UNITS of plain Python work) are started side by side and run in turn, the order reversed every other
round. Per request: the worker's user and system time and its involuntary context switches (psutil,
from /proc). `full` against `full-STAGE` is what STAGE costs a chat; `bare+UNITS` against `bare`, what
known work costs (bench/work_stage.py). By default the gateways run on the first CPU and the harness,
PostgreSQL and Redis on the others (`own core`, bench/cpus.py): the switches then show that no other
process took the worker's core, and what is left is the worker's own work; `--placement shared` leaves
every process where the scheduler puts it.

    python -m bench.stage_cpu full full-audit full-rate_limit full-auth full-metrics bare
    python -m bench.stage_cpu --concurrency 8 --placement shared full bare
    python -m bench.stage_cpu bare bare+100 bare+300 full
    python -m bench.stage_cpu --py-spy 5 full bare

With `--py-spy SECONDS`, after the rounds each variant's worker is sampled by py-spy for that long under
the same load, and the functions whose own time a chat differs most between the first variant and the
last are printed side by side (bench/own_time.py).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import machine, own_time
from bench.cpus import OWN_CORE, own_core
from bench.full import PG_PORT, REDIS
from bench.loadgen import Job, LoadProcess
from bench.measure import settle
from bench.own_time import Profiled
from bench.procs import find_tool
from bench.profile import record
from bench.scale import Gateway, Spread, log
from bench.variants import Variant, arguments, parsed, start_all

_BODY = json.dumps(
    {"model": "phi3", "messages": [{"role": "user", "content": "Say something."}], "stream": False}
).encode()
_WARM_UP = 3000
# py-spy's samples a second: a chat is some 100 µs, so its default 100 leaves a function of a few µs
# a handful of samples in a run.
_PY_SPY_RATE = 1000


@dataclass(frozen=True)
class Run:
    """One variant's run: its requests and what its worker spent on them."""

    variant: str
    round: int
    requests: int
    errors: int
    seconds: float
    user_s: float
    system_s: float
    involuntary: int

    def per_request_us(self, seconds: float) -> float:
        return seconds * 1e6 / self.requests if self.requests else float("nan")


@dataclass(frozen=True)
class Row:
    """A variant over the rounds, per request: CPU (user + system), user, system in µs; involuntary
    context switches; chats a second."""

    variant: str
    rounds: int
    cpu_us: Spread
    user_us: Spread
    system_us: Spread
    involuntary: Spread
    per_s: Spread
    errors: int


def rows(runs: Sequence[Run]) -> list[Row]:
    """One row per variant, in the order the variants first appear."""
    order = list(dict.fromkeys(run.variant for run in runs))
    found = []
    for variant in order:
        mine = [run for run in runs if run.variant == variant]
        found.append(
            Row(
                variant,
                len(mine),
                Spread.of(run.per_request_us(run.user_s + run.system_s) for run in mine),
                Spread.of(run.per_request_us(run.user_s) for run in mine),
                Spread.of(run.per_request_us(run.system_s) for run in mine),
                Spread.of(run.involuntary / run.requests if run.requests else float("nan") for run in mine),
                Spread.of(run.requests / run.seconds if run.seconds else float("nan") for run in mine),
                sum(run.errors for run in mine),
            )
        )
    return found


def table(concurrency: int, placement: str, found: Sequence[Row]) -> list[str]:
    """The rows side by side, then what each stage left out saves against `full` (medians)."""
    lines = [
        f"chat c{concurrency} against a fake answering at once, {placement}: the worker's CPU a request;"
        " medians of rounds (min..max)",
        f"{'variant':20} {'rounds':>6} {'cpu us':>22} {'user us':>8} {'sys us':>7}"
        f" {'invol./req':>10} {'chats/s':>8} errors",
    ]
    for row in found:
        lines.append(
            f"{row.variant:20} {row.rounds:>6} {row.cpu_us.text(sign=False, digits=1):>22}"
            f" {row.user_us.median:>8.1f} {row.system_us.median:>7.1f} {row.involuntary.median:>10.2f}"
            f" {row.per_s.median:>8.0f} {row.errors}"
        )
    by_name = {row.variant: row for row in found}
    for row in found:
        base, _, units = row.variant.partition("+")
        if units and base in by_name:
            added = row.cpu_us.median - by_name[base].cpu_us.median
            lines.append(f"  {units} units of work cost {added:.1f} us a chat ({row.variant} - {base})")
    full = by_name.get("full")
    if full is not None:
        for row in found:
            if row.variant.startswith("full-"):
                saved = full.cpu_us.median - row.cpu_us.median
                stage = row.variant[len("full-") :]
                lines.append(f"  {stage} costs {saved:.1f} us a chat (full - {row.variant})")
        bare = by_name.get("bare")
        if bare is not None and bare.cpu_us.median:
            lines.append(f"  full / bare: {full.cpu_us.median / bare.cpu_us.median:.2f}x")
    return lines


def _job(gateway: Gateway, concurrency: int, requests: int, seconds: float) -> Job:
    port, headers = gateway.server.port, gateway.headers
    return Job(port, "/v1/chat/completions", _BODY, concurrency, requests, seconds, headers=headers)


def _run(
    load: LoadProcess,
    name: str,
    gateway: Gateway,
    concurrency: int,
    requests: int,
    round_: int,
    seconds: float = 900.0,
) -> Run:
    """`requests` chats (or as many as `seconds` allow) and what the worker spent on them."""
    server = gateway.server
    before = server.usage()
    result = load.run(_job(gateway, concurrency, requests, seconds))
    after = server.usage()
    return Run(
        name,
        round_,
        len(result.total),
        result.errors,
        result.elapsed_s,
        after.user_s - before.user_s,
        after.system_s - before.system_s,
        after.involuntary - before.involuntary,
    )


def _sampled(
    load: LoadProcess, py_spy: str, name: str, gateway: Gateway, concurrency: int, seconds: int, out: Path
) -> Profiled:
    """`name`'s worker sampled by py-spy for `seconds` under the rounds' load."""

    # The load outlasts the sampling by a second: every sample sees the worker busy.
    def run() -> Run:
        return _run(load, name, gateway, concurrency, 10**9, 0, seconds + 1.0)

    pid = gateway.server.popen.pid
    entries, samples, sampled = record(py_spy, pid, seconds, out, run, rate=_PY_SPY_RATE)
    return Profiled.of(name, entries, samples, sampled.per_request_us(sampled.user_s + sampled.system_s))


def measure(
    variants: Sequence[Variant],
    concurrency: int,
    placement: str,
    rounds: int,
    requests: int,
    py_spy_s: int | None = None,
) -> tuple[list[Run], list[Profiled], list[str]]:
    """The rounds' runs; with `py_spy_s`, each variant sampled by py-spy afterwards (`own_time`)."""
    py_spy = find_tool("py-spy") if py_spy_s else None
    if py_spy_s and py_spy is None:
        raise SystemExit("bench.stage_cpu: --py-spy needs py-spy (make .venv/.bench-stamp installs it)")
    runs: list[Run] = []
    profiled: list[Profiled] = []
    with contextlib.ExitStack() as stack:
        fake, gateways, notes = start_all(stack, variants, "stage_cpu")
        load = LoadProcess()
        stack.callback(load.close)
        if placement == OWN_CORE:
            harness = [psutil.Process(load.process.pid), *fake.processes()]
            workers = [proc for g in gateways.values() for proc in g.server.processes()]
            pinned = stack.enter_context(own_core(workers, harness, (PG_PORT, REDIS[1])))
            notes.extend(pinned.notes)
        for name, gateway in gateways.items():
            _run(load, name, gateway, concurrency, _WARM_UP, 0)  # pools opened, leases taken, code warm
        order = list(gateways.items())
        for round_ in range(1, rounds + 1):
            for name, gateway in order if round_ % 2 else order[::-1]:
                settle(0.3)
                run = _run(load, name, gateway, concurrency, requests, round_)
                runs.append(run)
                cpu = run.per_request_us(run.user_s + run.system_s)
                log(f"stage_cpu: round {round_}/{rounds} {name:20} {cpu:7.1f} us a chat")
        if py_spy is not None and py_spy_s:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-py-spy-")))
            for index, (name, gateway) in enumerate(order):
                settle(0.3)
                log(f"stage_cpu: py-spy on {name} for {py_spy_s} s")
                out = folder / f"{index}.txt"
                profiled.append(_sampled(load, py_spy, name, gateway, concurrency, py_spy_s, out))
    return runs, profiled, sorted(set(notes))


def main(argv: list[str] | None = None) -> None:
    parser = arguments("python -m bench.stage_cpu", __doc__, concurrency=32, rounds=3)
    parser.add_argument("--requests", type=int, default=15_000, help="per run")
    parser.add_argument(
        "--py-spy",
        type=int,
        metavar="SECONDS",
        help="then sample each variant's worker this many seconds (own_time)",
    )
    args = parser.parse_args(argv)
    if args.py_spy is not None and args.py_spy < 1:
        parser.error("--py-spy samples for at least a second")
    variants = parsed(parser, args.variants)
    runs, profiled, notes = measure(
        variants, args.concurrency, args.placement, args.rounds, args.requests, args.py_spy
    )
    print(machine.describe().line())
    print("\n".join(table(args.concurrency, args.placement, rows(runs))))
    if profiled:
        print("\n".join(own_time.table(profiled)))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
