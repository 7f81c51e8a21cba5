"""`python -m bench`: the gateway against direct and nginx baselines, interleaved round by round.

python -m bench [--quick] [--rounds 3] [--json PATH] [--profile 10] [--streams 10000]
                [--scenarios chat,voice,slow,bodies,workers,tls,instructions,latency,streams10k]

Targets: direct (the fake Ollama), nginx, uv-1w/uv-2w (uvicorn, the default), hc-1w/hc-2w (hypercorn),
gr-1w (granian, measured only), all with the bare pipelines (chunking and cache only), and uv-full
(uvicorn, the repository's pipelines with every stage: auth, rate limit in Redis, audit to PostgreSQL,
metrics, cache). 2-worker targets run only the c32 scenarios and the held-open streams; gr-1w runs chat,
stream, voice and the held-open streams; uv-full runs chat, voice and embeddings (bench/targets.py).
`bodies` (bench/bodies.py) posts 1, 4 and 13 MB chats to uv-1w, hc-1w and uv-full and checks the memory
they take (in a full run, or when named; not with --quick). `workers` (bench/workers.py), `tls`
(bench/tls_front.py) and `instructions` (bench/instructions.py: uv-full / uv-1w counted by callgrind) run
afterwards with processes of their own (in a full run, or when named). Issue 17's
`latency` (uv-full against direct at c1 to c256, a fake that takes 60 ms or streams 64 tokens 10 ms apart;
`--latency-target uv-1w` measures the bare gateway instead, to see what the stages add)
and `streams10k` (10,000 open streams on one worker) run last, with processes of their own
(bench/issue17.py). A run without --scenarios ends with the admission section (bench/overload.py): the
scheduling overhead and twice the fleet's capacity of mixed traffic (12 s, 5 s with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from bench import front, issue17, machine, overload, report, routing, scale, tracing_cost
from bench.bodies import BodyRun, measure_bodies
from bench.loadgen import LoadProcess
from bench.measure import Sample, measure, settle
from bench.procs import REPO, BenchError, find_tool
from bench.profile import format_top, profile
from bench.scenarios import FULL, QUICK, Budget, Scenario, Target, all_scenarios, job_for
from bench.targets import route_exists, run_order, start_targets

DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
BODIES = "bodies"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1 round of short runs (under a minute)")
    parser.add_argument("--scenarios", help="comma-separated name prefixes, e.g. 'chat,voice c8,slow'")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="afterwards, py-spy the 1-worker gateway under voice c8 load this long",
    )
    parser.add_argument(
        "--profile-scenario",
        default="voice c8",
        metavar="NAME",
        help="the load profiled with --profile, e.g. 'chat c8' (default 'voice c8')",
    )
    parser.add_argument(
        "--profile-target",
        default=report.GATEWAY_1W,
        metavar="NAME",
        help="the target profiled (default hc-1w)",
    )
    scale.add_arguments(parser)
    return parser.parse_args(argv)


def select(scenarios: list[Scenario], wanted: str | None) -> list[Scenario]:
    if not wanted:
        return scenarios
    prefixes = [p.strip() for p in wanted.split(",") if p.strip()]
    chosen = [s for s in scenarios if any(s.name.startswith(p) for p in prefixes)]
    if not chosen and not set(prefixes) <= {BODIES, *front.NAMES}:
        raise BenchError(f"no scenario matches {wanted!r}; known: {', '.join(s.name for s in scenarios)}")
    return chosen


def warm_up(load: LoadProcess, targets: list[Target], scenarios: list[Scenario]) -> None:
    """Open pools, fill caches and import lazily loaded code before anything is measured."""
    budget = Budget(0.3, 2000, 0, 0)
    for target in targets:
        for scenario in filter(target.runs, scenarios):
            if scenario.slow:
                scenario = Scenario(scenario.name, scenario.kind, 8, tokens=2)
            load.run(job_for(target, scenario, budget))


def run_rounds(
    load: LoadProcess, targets: list[Target], scenarios: list[Scenario], budget: Budget, rounds: int
) -> list[Sample]:
    samples: list[Sample] = []
    for round_ in range(1, rounds + 1):
        # Rotating the order as well keeps "who runs right after whom" from favouring one target.
        shift = (round_ - 1) % len(targets)
        order = targets[shift:] + targets[:shift]
        for scenario in scenarios:
            for target in run_order(order, scenario):
                sample = measure(load, target, scenario, budget, round_)
                samples.append(sample)
                _progress(round_, rounds, sample)
                settle(0.3 if scenario.slow else 0.05)
    return samples


def _progress(round_: int, rounds: int, s: Sample) -> None:
    print(
        f"  round {round_}/{rounds}  {s.scenario:14} {s.target:7} {s.rps:8.0f} req/s"
        f"  ttft p50 {s.ttft_p50_ms:7.3f} ms  cpu {s.cpu_ms_per_request:7.3f} ms/req  errors {s.errors}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    sections = front.wanted(args.scenarios, args.quick)
    mine, rest = scale.wanted(args.scenarios)
    scenarios = [] if rest == "" else select(all_scenarios(budget), rest)
    if not scenarios and BODIES not in (args.scenarios or "").split(","):
        return _sections_only(args, argv, sections, mine, rounds, budget)
    notes: list[str] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-")))
        # Named, or part of a full run: --quick leaves it out (it takes about half a minute).
        named = BODIES in (args.scenarios or "").split(",")
        bodies_wanted = named or not (args.scenarios or args.quick)
        targets = start_targets(stack, workdir, scenarios, notes, with_full=bodies_wanted)
        load = LoadProcess()
        stack.callback(load.close)
        scenarios = _drop_missing_routes(scenarios, targets, notes)
        warm_up(load, targets, scenarios)
        samples = run_rounds(load, targets, scenarios, budget, rounds)
        bodies: list[BodyRun] = []
        kept: dict[str, float] = {}
        if bodies_wanted:
            _log_line("bench: large bodies on uv-1w, hc-1w and uv-full")
            bodies, kept = measure_bodies(targets, (report.UVICORN_1W, report.GATEWAY_1W, report.FULL))
        # The raw stacks stay beside the results, for questions the top-15 table does not answer.
        raw = args.json.with_name(args.json.stem + "-profile.txt")
        top = _profile(
            load,
            targets,
            all_scenarios(budget),
            raw,
            args.profile,
            args.profile_scenario,
            args.profile_target,
            notes,
        )
    found = report.rows(samples, {s.name: s.concurrency for s in scenarios if s.slow})
    checks = {
        report.GATEWAY_1W: report.checks(found),
        report.UVICORN_1W: report.checks(found, report.UVICORN_1W, report.UVICORN_2W),
        report.FULL: [report.full_check(found, samples)],
    }
    _print(found, samples, checks, notes, top, rounds, time.monotonic() - started)
    if spread := report.full_spread(samples):
        print("  CPU per request over the runs (ms, min-max): " + "; ".join(spread))
    _print_bodies(bodies, kept)
    _print_routing()
    extra = front.run(sections, rounds, args.quick)
    if extra.lines:
        print("\n".join(extra.lines))
    results = {**extra.json, "tracing": tracing_cost.bench_section(args.quick)}
    results |= _issue17(args, mine, notes)
    _write_json(args.json, argv, rounds, budget, samples, found, checks, notes, top, bodies, kept, results)
    if not args.scenarios:  # issue 15: scheduling overhead and the overload scenario (bench/overload.py)
        overload.section(args.json, args.quick)
    return 0


def _sections_only(
    args: argparse.Namespace,
    argv: list[str] | None,
    sections: list[str],
    mine: list[str],
    rounds: int,
    budget: Budget,
) -> int:
    """Only the sections with processes of their own were named: the main targets are not started."""
    extra = front.run(sections, rounds, args.quick)
    if extra.lines:
        print("\n".join(extra.lines))
    notes: list[str] = []
    results = extra.json | _issue17(args, mine, notes)
    _write_json(args.json, argv, rounds, budget, [], [], {}, notes, "", [], {}, results)
    return 0


def _issue17(args: argparse.Namespace, names: list[str], notes: list[str]) -> dict[str, object]:
    """Issue 17's scenarios at scale (bench/issue17.py), run last, printed, and their JSON."""
    if not names:
        return {}
    before = len(notes)
    found = issue17.run(names, args.quick, args.rounds, args.streams, notes, args.latency_target)
    issue17.print_sections(found)
    for note in notes[before:]:
        print(f"note: {note}")
    return {"issue17": {section.name: section.data for section in found}}


def _print_routing() -> None:
    print("\nRouting over several Ollama servers (bench/routing.py, in process; issue 14 targets):")
    print("\n".join("  " + line for line in asyncio.run(routing.lines())))


def _log_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_bodies(bodies: list[BodyRun], kept: dict[str, float]) -> None:
    if not bodies:
        return
    print("\nMemory per large request (worker RSS in MiB; issue 12: peak <= 4x body + 10 MiB, handed back):")
    print("\n".join("  " + run.line() for run in bodies))
    for name, mib in kept.items():
        print(f"  {name}: after every large request the worker holds +{mib:.1f} MiB over its RSS before them")


def _drop_missing_routes(
    scenarios: list[Scenario], targets: list[Target], notes: list[str]
) -> list[Scenario]:
    embed = [s for s in scenarios if s.embeddings]
    gateway = next(t for t in targets if t.gateway)
    if embed and not route_exists(gateway.port, "/api/embed"):
        notes.append("POST /api/embed answers 404: embeddings scenarios skipped")
        return [s for s in scenarios if not s.embeddings]
    return scenarios


def _profile(
    load: LoadProcess,
    targets: list[Target],
    scenarios: list[Scenario],
    raw: Path,
    seconds: float,
    name: str,
    target_name: str,
    notes: list[str],
) -> str:
    if seconds <= 0:
        return ""
    py_spy = find_tool("py-spy")
    if py_spy is None:
        notes.append("py-spy is not installed (make bench installs it): no profile")
        return ""
    gateway = next(t for t in targets if t.name == target_name)
    scenario = next((s for s in scenarios if s.name == name and not s.slow), None)
    if scenario is None:
        known = ", ".join(s.name for s in scenarios if not s.slow)
        raise BenchError(f"no scenario {name!r} to profile; known: {known}")
    print(f"bench: py-spy on {target_name} under {name} for {seconds:g} s", file=sys.stderr, flush=True)
    entries, samples = profile(py_spy, load, gateway, scenario, seconds, raw)
    notes.append(f"py-spy's raw stacks: {raw}")
    return f"(py-spy, {target_name}, {name})\n" + format_top(entries, samples)


def _print(
    found: list[report.Row],
    samples: list[Sample],
    checks: dict[str, list[report.Check]],
    notes: list[str],
    top: str,
    rounds: int,
    elapsed_s: float,
) -> None:
    print(
        f"\nCitadel proxy bench: medians of {rounds} interleaved round(s); times in ms; '+' = added vs direct"
    )
    print(f"{machine.describe().line()}, took {elapsed_s:.0f} s\n")
    print(report.table(found))
    for name, listed in checks.items():
        print(f"\nTargets (issue 3) on {name}:")
        for check in listed:
            print("  " + check.line())
    ratios = report.full_ratios(found, samples)
    if ratios:
        print("  uv-full / uv-1w CPU per request: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if lines := report.embeddings(found):
        print("\nEmbeddings /api/embed, hit vs miss (total ms, req/s, CPU ms/req):")
        print("\n".join("  " + line for line in lines))
    for note in notes:
        print(f"note: {note}")
    if top:
        print("\nTop functions by own time:\n" + top)


def _write_json(
    path: Path,
    argv: list[str] | None,
    rounds: int,
    budget: Budget,
    samples: list[Sample],
    found: list[report.Row],
    checks: dict[str, list[report.Check]],
    notes: list[str],
    top: str,
    bodies: list[BodyRun],
    kept: dict[str, float],
    sections: dict[str, object] | None = None,
) -> None:
    document: dict[str, object] = {
        "command": ["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine.describe().to_json(),
        "rounds": rounds,
        "budget": budget.__dict__,
        "rows": [row.__dict__ for row in found],
        "checks": {
            name: [{**check.__dict__, "verdict": check.verdict} for check in listed]
            for name, listed in checks.items()
        },
        "full_cpu_ratios": report.full_ratios(found, samples),
        "samples": [sample.to_json() for sample in samples],
        "notes": notes,
        "profile": top,
        "bodies": [
            {**run.__dict__, "per_request_mib": run.per_request_mib, "verdict": run.verdict} for run in bodies
        ],
        "bodies_kept_mib": kept,
        **(sections or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


def _finite(value: object) -> object:
    """NaN (nothing measured) becomes null: JSON has no NaN."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
