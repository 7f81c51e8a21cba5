"""`python -m bench.variants`: one latency cell through several gateways that differ in one thing.

Each variant is a gateway of its own (one uvicorn worker) measured against the fake directly in the
same round, as the latency scenario measures uv-full (bench/latency.py); every round runs them all, in
an order that alternates, so that the variants are compared on the same machine minutes apart rather
than in runs an hour apart. A variant says what differs from the repository's pipelines:

    bare            the bare pipelines (uv-1w)
    full            every stage, PostgreSQL and Redis (uv-full)
    full-STAGE      every stage but STAGE (audit, auth, rate_limit, metrics, cache, ...)
    full@SECONDS    every stage, the audit writer waiting SECONDS for a batch (`audit.linger_s`)
    VARIANT+UNITS   any of those with UNITS units of plain Python work first in every pipeline
                    (bench/work_stage.py): what known work costs beside what the stages cost

    python -m bench.variants --concurrency 64 --placement 'own core' full full-audit full-rate_limit bare
    python -m bench.variants --concurrency 256 full@0.05 full@0.01

How the audit writer's wait was chosen (README, Performance) was measured this way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import latency, machine, work_stage
from bench.cpus import OWN_CORE, SHARED
from bench.full import gateway_spec, with_audit_linger
from bench.loadgen import LoadProcess
from bench.procs import Server, start_gateway
from bench.scale import BARE_NAME, FULL_NAME, Gateway, log, start_fake_for

_MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class Variant:
    """One gateway to measure: the bare or the full pipelines, a stage left out, the audit writer's wait."""

    text: str
    full: bool
    without: str | None = None
    linger_s: float | None = None
    work_units: int | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        rest, plus, units = text.partition("+")
        base, at, linger = rest.partition("@")
        kind, dash, without = base.partition("-")
        if kind not in ("bare", "full") or (dash and not without) or (kind == "bare" and (dash or at)):
            raise ValueError(f"{text!r}: a variant is bare, full, full-STAGE or full@SECONDS, then +UNITS")
        linger_s = work_units = None
        if at:
            try:
                linger_s = float(linger)
            except ValueError:
                raise ValueError(f"{text!r}: the audit writer's wait after '@' is in seconds") from None
        if plus:
            if not units.isdigit():
                raise ValueError(f"{text!r}: the units of work after '+' are a whole number")
            work_units = int(units)
        return cls(text, kind == "full", without or None, linger_s, work_units)

    @property
    def name(self) -> str:
        """The variant as a file name (its folder, its log)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.text)


def table(cell: str, placement: str, found: Sequence[latency.Row]) -> list[str]:
    """The variants' rows (`latency.rows`) side by side."""
    lines = [
        f"{cell}, {placement}: each variant minus direct in the same round, ms; medians of rounds (min..max)",
        f"{'variant':20} {'rounds':>6} {'added ttft p50':>24} {'added ttft p99':>24} {'gw cpu %':>16} errors",
    ]
    for row in found:
        cpu = row.gateway_cpu_percent.text(sign=False, digits=0)
        lines.append(
            f"{row.target:20} {row.rounds:>6} {row.added_ttft_p50_ms.text():>24}"
            f" {row.added_ttft_p99_ms.text():>24} {cpu:>16} {row.errors}"
        )
    return lines


def _start(
    stack: contextlib.ExitStack, workdir: Path, fake_port: int, variant: Variant, notes: list[str]
) -> Gateway | None:
    """The variant's gateway started (not yet ready); None, with a note, when its services are missing."""
    folder = workdir / variant.name  # each variant's pipelines are written into its own folder
    folder.mkdir()
    name = FULL_NAME if variant.full else BARE_NAME
    found = gateway_spec(stack, folder, name, full=variant.full, notes=notes, without=variant.without)
    if found is None:
        return None
    spec, headers = found
    spec = dataclasses.replace(spec, name=variant.name)
    if variant.linger_s is not None:
        spec = with_audit_linger(spec, variant.linger_s)
    if variant.work_units is not None:
        work_stage.add_to_pipelines(folder / spec.pipelines, variant.work_units)
        spec = dataclasses.replace(spec, command=(sys.executable, "-m", "bench.work_stage"))
    server = start_gateway(spec, folder, fake_port, "", _MAX_CONNECTIONS)
    stack.callback(server.stop)
    return Gateway(server, headers)


def start_all(
    stack: contextlib.ExitStack, variants: Sequence[Variant], tool: str
) -> tuple[Server, dict[str, Gateway], list[str]]:
    """A fake Ollama and every variant's gateway, ready, in a work folder that goes with `stack`; the
    gateways by variant, and notes. `tool` names the work folder, the fake and the log lines."""
    notes: list[str] = []
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"citadel-bench-{tool}-")))
    log(f"{tool}: starting a fake Ollama and {', '.join(v.text for v in variants)}")
    fake = start_fake_for(stack, workdir, f"fake-{tool}")
    gateways: dict[str, Gateway] = {}
    for variant in variants:
        started = _start(stack, workdir, fake.port, variant, notes)
        if started is None:
            raise SystemExit(f"bench.{tool}: {notes[-1]}")
        gateways[variant.text] = started
    for gateway in gateways.values():
        gateway.server.wait_ready("/health", timeout_s=90.0)
    return fake, gateways, notes


def measure(
    variants: Sequence[Variant],
    kind: latency.Kind,
    concurrency: int,
    placement: str,
    rounds: int,
    seconds: float,
) -> tuple[list[latency.Run], list[str]]:
    runs: list[latency.Run] = []
    with contextlib.ExitStack() as stack:
        fake, gateways, notes = start_all(stack, variants, "variants")
        load = LoadProcess()
        stack.callback(load.close)
        targets: list[latency.Target] = [(latency.DIRECT, fake, None)]
        targets += [(n, g.server, g) for n, g in gateways.items()]
        harness = [psutil.Process(load.process.pid), *fake.processes()]
        cells = latency.Cells(load, targets, [g.server for g in gateways.values()], harness)
        cells.warm([kind], concurrency)
        for round_ in range(1, rounds + 1):
            runs += cells.round(kind, concurrency, seconds, placement, round_, rounds, "variants")
        notes.extend(cells.notes)
    return runs, sorted(set(notes))


def arguments(prog: str, doc: str, *, concurrency: int, rounds: int) -> argparse.ArgumentParser:
    """A command line of variants with --concurrency, --placement (own core by default) and --rounds."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument(
        "variants",
        nargs="+",
        metavar="VARIANT",
        help="bare, full, full-STAGE, full@SECONDS; +UNITS after any",
    )
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--placement", choices=(SHARED, OWN_CORE), default=OWN_CORE)
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def parsed(parser: argparse.ArgumentParser, texts: Sequence[str]) -> list[Variant]:
    """The variants named on the command line (a usage error for any other text)."""
    try:
        return [Variant.parse(text) for text in texts]
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    parser = arguments("python -m bench.variants", __doc__, concurrency=64, rounds=4)
    parser.add_argument("--kind", choices=[k.name for k in latency.KINDS], default="chat")
    parser.add_argument("--seconds", type=float, default=4.0, help="per run")
    args = parser.parse_args(argv)
    variants = parsed(parser, args.variants)
    kind = next(k for k in latency.KINDS if k.name == args.kind)
    runs, notes = measure(variants, kind, args.concurrency, args.placement, args.rounds, args.seconds)
    cell = latency.cell_name(kind, args.concurrency)
    print(machine.describe().line())
    print("\n".join(table(cell, args.placement, latency.rows(runs))))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
