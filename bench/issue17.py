"""Issue 17 (performance at scale) in `python -m bench`: latency against concurrency (bench/latency.py) and
ten thousand open streams (bench/open_streams.py), each with processes of its own, started after the
other scenarios' are stopped. `--scenarios latency,streams10k` runs them alone."""

from __future__ import annotations

import resource
from dataclasses import dataclass, replace

from bench import latency, open_streams
from bench.cpus import OWN_CORE, SHARED
from bench.scale import BARE_NAME, FULL_NAME, LATENCY, STREAMS_10K, raise_nofile

# A full run holds the streams twice on each target; --quick once, on uv-1w, with fewer streams.
STREAM_ROUNDS = 2


@dataclass(frozen=True)
class Section:
    name: str
    lines: list[str]  # printed after the other sections
    data: dict[str, object]  # under "issue17" in the results JSON


def run(
    names: list[str],
    quick: bool,
    rounds: int | None,
    streams: int | None,
    notes: list[str],
    latency_target: str = FULL_NAME,
) -> list[Section]:
    sections = []
    if LATENCY in names:
        sections.append(_latency(quick, rounds or (1 if quick else 3), notes, latency_target))
    if STREAMS_10K in names:
        plan = open_streams.QUICK_PLAN if quick else open_streams.FULL_PLAN
        if streams:
            plan = replace(plan, streams=streams)
        targets = [BARE_NAME] if quick else [BARE_NAME, FULL_NAME]
        sections.append(_streams(targets, plan, rounds or (1 if quick else STREAM_ROUNDS), notes))
    return sections


def _latency(quick: bool, rounds: int, notes: list[str], target: str) -> Section:
    runs, rows = latency.measure(quick, rounds, notes, target)
    listed = latency.checks(rows, target)
    plan = latency.QUICK_PLAN if quick else latency.FULL_PLAN
    floor = latency.floor_for(target)
    beside = "" if floor is None else f", and {floor} (no stage) as its floor"
    lines = [
        f"Latency against concurrency (issue 17): {target}{beside}, minus direct, the same cell in the same"
        f" round; medians of {rounds} round(s) (min..max); ms",
        f"chat: non-streaming, answered after 60 ms; voice: 50 ms to the first token, 64 tokens 10 ms apart;"
        f" a cell runs long enough for {plan.samples} answers, within {plan.least_s:g}-{plan.most_s:g} s;"
        f" n/round = the answers each p99 rests on (under 100: the p99 is about the largest)",
        f"cpus: '{SHARED}' = every process where the scheduler puts it; '{OWN_CORE}' = the gateway on CPU 0,"
        " the fake, the load generator, PostgreSQL and Redis on the others (bench/cpus.py)",
        *latency.table(rows),
        *("  " + check.line() for check in listed),
    ]
    return Section(LATENCY, lines, latency.to_json(runs, rows, listed))


def _streams(targets: list[str], plan: open_streams.Plan, rounds: int, notes: list[str]) -> Section:
    asked = plan.streams
    # A worker holds two descriptors a stream (client and Ollama), the fake and the generator one each.
    if note := raise_nofile(2 * asked + open_streams.SPARE_FDS):
        notes.append(note)
    allowed = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - open_streams.SPARE_FDS) // 2
    if allowed < asked:
        plan = replace(plan, streams=allowed)
        notes.append(f"streams10k: the file limit lets one worker hold {allowed} streams, not {asked}")
    holds = open_streams.measure(targets, plan, rounds, notes)
    listed = open_streams.checks(holds, asked)
    lines = [
        f"Open streams (issue 17): {plan.streams} voice streams on one worker, {plan.tokens} tokens a second"
        f" apart, opened at {plan.ramp_per_s:.0f}/s; RSS in MiB; 'at once' = most streams open together;"
        " probe: short voice streams one at a time while all are open (n = answers), TTFT in ms,"
        " added = gateway minus direct",
        *open_streams.table(holds),
        *("  " + check.line() for check in listed),
    ]
    return Section(STREAMS_10K, lines, open_streams.to_json(holds, listed))


def print_sections(sections: list[Section]) -> None:
    for section in sections:
        print()
        print("\n".join(section.lines))
