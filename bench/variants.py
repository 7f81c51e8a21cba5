"""`python -m bench.variants`: one latency cell through several gateways that differ in one thing.

Each variant is a gateway of its own (one uvicorn worker) measured against the fake directly in the
same round, as the latency scenario measures uv-full (bench/latency.py); every round runs them all, in
an order that alternates, so that the variants are compared on the same machine minutes apart rather
than in runs an hour apart. A variant says what differs from the repository's pipelines:

    bare            the bare pipelines (uv-1w)
    full            every stage, PostgreSQL and Redis (uv-full)
    full-STAGE      every stage but STAGE (audit, auth, rate_limit, metrics, cache, ...)
    full@SECONDS    every stage, the audit writer waiting SECONDS for a batch (`audit.linger_s`)

    python -m bench.variants --concurrency 64 --placement 'own core' full full-audit full-rate_limit bare
    python -m bench.variants --concurrency 256 full@0.05 full@0.01

How the audit writer's wait was chosen (README, Performance) was measured this way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import latency
from bench.cpus import OWN_CORE, SHARED, own_core
from bench.full import PG_PORT, REDIS, gateway_spec
from bench.loadgen import LoadProcess
from bench.measure import settle
from bench.procs import start_gateway
from bench.scale import BARE_NAME, FULL_NAME, Gateway, Spread, log, start_fake_for

_MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class Variant:
    """One gateway to measure: the bare or the full pipelines, a stage left out, the audit writer's wait."""

    text: str
    full: bool
    without: str | None = None
    linger_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        base, at, linger = text.partition("@")
        kind, dash, without = base.partition("-")
        if kind not in ("bare", "full") or (dash and not without) or (kind == "bare" and (dash or at)):
            raise ValueError(f"{text!r}: a variant is bare, full, full-STAGE or full@SECONDS")
        linger_s = None
        if at:
            try:
                linger_s = float(linger)
            except ValueError:
                raise ValueError(f"{text!r}: the audit writer's wait after '@' is in seconds") from None
        return cls(text, kind == "full", without or None, linger_s)

    @property
    def name(self) -> str:
        """The variant as a file name (its folder, its log)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.text)


@dataclass(frozen=True)
class Row:
    """One variant over the rounds: added = the variant minus direct in the same round (ms)."""

    variant: str
    rounds: int
    errors: int
    added_ttft_p50_ms: Spread
    added_ttft_p99_ms: Spread
    gateway_cpu_percent: Spread


def rows(variants: Sequence[str], runs: Sequence[latency.Run]) -> list[Row]:
    direct = {r.round: r for r in runs if r.target == latency.DIRECT}
    found = []
    for variant in variants:
        pairs = [(r, direct[r.round]) for r in runs if r.target == variant and r.round in direct]
        found.append(
            Row(
                variant=variant,
                rounds=len(pairs),
                errors=sum(g.errors + d.errors for g, d in pairs),
                added_ttft_p50_ms=Spread.of(g.ttft_p50_ms - d.ttft_p50_ms for g, d in pairs),
                added_ttft_p99_ms=Spread.of(g.ttft_p99_ms - d.ttft_p99_ms for g, d in pairs),
                gateway_cpu_percent=Spread.of(g.cpu_percent for g, _ in pairs),
            )
        )
    return found


def table(cell: str, placement: str, found: Sequence[Row]) -> list[str]:
    lines = [
        f"{cell}, {placement}: each variant minus direct in the same round, ms; medians of rounds (min..max)",
        f"{'variant':20} {'rounds':>6} {'added ttft p50':>24} {'added ttft p99':>24} {'gw cpu %':>16} errors",
    ]
    for row in found:
        cpu = row.gateway_cpu_percent.text(sign=False, digits=0)
        lines.append(
            f"{row.variant:20} {row.rounds:>6} {row.added_ttft_p50_ms.text():>24}"
            f" {row.added_ttft_p99_ms.text():>24} {cpu:>16} {row.errors}"
        )
    return lines


def _start(
    stack: contextlib.ExitStack, workdir: Path, fake_port: int, variant: Variant, notes: list[str]
) -> Gateway | None:
    folder = workdir / variant.name  # each variant's pipelines are written into its own folder
    folder.mkdir()
    name = FULL_NAME if variant.full else BARE_NAME
    found = gateway_spec(stack, folder, name, full=variant.full, notes=notes, without=variant.without)
    if found is None:
        return None
    spec, headers = found
    spec = dataclasses.replace(spec, name=variant.name)
    if variant.linger_s is not None:
        spec = dataclasses.replace(spec, extra=spec.extra + f"audit: {{linger_s: {variant.linger_s:g}}}\n")
    server = start_gateway(spec, folder, fake_port, "", _MAX_CONNECTIONS)
    stack.callback(server.stop)
    return Gateway(server, headers)


def measure(
    variants: Sequence[Variant],
    kind: latency.Kind,
    concurrency: int,
    placement: str,
    rounds: int,
    seconds: float,
) -> tuple[list[latency.Run], list[str]]:
    notes: list[str] = []
    runs: list[latency.Run] = []
    cell = latency.cell_name(kind, concurrency)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-variants-")))
        log(f"variants: starting a fake Ollama and {', '.join(v.text for v in variants)}")
        fake = start_fake_for(stack, workdir, "fake-variants")
        gateways: dict[str, Gateway] = {}
        for variant in variants:
            started = _start(stack, workdir, fake.port, variant, notes)
            if started is None:
                raise SystemExit(f"bench.variants: {notes[-1]}")
            gateways[variant.text] = started
        for gateway in gateways.values():
            gateway.server.wait_ready("/health", timeout_s=90.0)
        load = LoadProcess()
        stack.callback(load.close)
        targets = [(latency.DIRECT, fake, None), *((n, g.server, g) for n, g in gateways.items())]
        for _, server, through in targets:  # pools filled, code imported, before anything counts
            load.run(latency.job(kind, concurrency, 0.3, server.port, through))
        harness = [psutil.Process(load.process.pid), *fake.processes()]
        every_gateway = [p for g in gateways.values() for p in g.server.processes()]
        for round_ in range(1, rounds + 1):
            for name, server, through in targets if round_ % 2 else targets[::-1]:
                job = latency.job(kind, concurrency, seconds, server.port, through)
                with contextlib.ExitStack() as placed:
                    if placement == OWN_CORE:
                        pinned = own_core(every_gateway, harness, (PG_PORT, REDIS[1]))
                        notes.extend(placed.enter_context(pinned).notes)
                    run = latency.run_cell(load, name, server, job, cell, round_, placement)
                runs.append(run)
                where = f"{round_}/{rounds} {cell} {placement}"
                log(f"variants round {where} {name:20} ttft p99 {run.ttft_p99_ms:.2f} ms")
                settle(0.1)
    return runs, sorted(set(notes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.variants", description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="VARIANT", help="bare, full, full-STAGE, full@SECONDS")
    parser.add_argument("--kind", choices=[k.name for k in latency.KINDS], default="chat")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--placement", choices=(SHARED, OWN_CORE), default=OWN_CORE)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="per run")
    args = parser.parse_args(argv)
    try:
        variants = [Variant.parse(text) for text in args.variants]
    except ValueError as exc:
        parser.error(str(exc))
    kind = next(k for k in latency.KINDS if k.name == args.kind)
    runs, notes = measure(variants, kind, args.concurrency, args.placement, args.rounds, args.seconds)
    cell = latency.cell_name(kind, args.concurrency)
    print("\n".join(table(cell, args.placement, rows([v.text for v in variants], runs))))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
