"""`python -m bench.stalls`: the latency scenario's load on one uv-full gateway whose event loop is timed
(bench/stall_probe.py), then every callback that held the loop past a threshold and every garbage
collection, grouped by source. Stalls are counted in the gateway itself, not read from percentiles of
wall-clock times, which another process on the machine moves as much as the gateway does.

python -m bench.stalls [--threshold-ms 0.5] [--seconds 3] [--cells chat,voice] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import latency
from bench.full import prepare
from bench.loadgen import LoadProcess
from bench.measure import percentile, settle
from bench.procs import REPO, GatewaySpec, Server, free_port, full_pipelines, gateway_config, start_fake
from bench.scale import FULL_NAME, Gateway, log
from bench.stall_probe import GARBAGE_ENV, OUT_ENV, SAMPLE_ENV, THRESHOLD_ENV, UVLOOP_ENV

# Non-streaming chat answered at once (the main table's `chat c1`): thousands of requests a second, so the
# audit writer's batches hold dozens of records each.
FAST = latency.Kind("fast", "/v1/chat/completions", "phi3", False, 0.001)
# Gateway frames that name where a long callback spent its time; the rest is the loop and libraries.
_OURS = "citadel_proxy/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stalls", description=__doc__.splitlines()[0])
    parser.add_argument("--threshold-ms", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell (kind x concurrency)")
    parser.add_argument(
        "--kinds", default="chat,voice", help="of chat, voice and fast (chat answered at once)"
    )
    parser.add_argument("--concurrency", default=",".join(str(c) for c in latency.CONCURRENCY))
    parser.add_argument("--sample", action="store_true", help="sample stacks during long callbacks")
    parser.add_argument("--uvloop", action="store_true", help="keep uvloop: collections only, no callbacks")
    parser.add_argument("--garbage", action="store_true", help="count what the collector frees, by type")
    parser.add_argument("--json", type=Path, help="also write the probe's raw record here")
    args = parser.parse_args(argv)
    kinds = [k for k in (*latency.KINDS, FAST) if k.name in args.kinds.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-stalls-")))
        fake = start_fake("fake-stalls", workdir, 64, 0.0)
        stack.callback(fake.stop)
        full = prepare(stack, notes)
        if full is None:
            print("\n".join(notes), file=sys.stderr)
            return 1
        full_pipelines(workdir)
        spec = GatewaySpec(FULL_NAME, server="uvicorn", pipelines="pipelines-full", extra=full.extra)
        record = workdir / "stalls.json"
        server = _start_probed(
            workdir, spec, fake.port, record, args.threshold_ms, args.sample, args.garbage, args.uvloop
        )
        stack.callback(server.stop)
        server.wait_ready("/health", timeout_s=90.0)
        gateway = Gateway(server, full.headers)
        load = LoadProcess()
        stack.callback(load.close)
        for kind in kinds:  # pools filled, code imported
            load.run(latency.job(kind, levels[-1], 0.3, server.port, gateway))
        windows: list[tuple[str, float, float, int]] = []
        for kind in kinds:
            for level in levels:
                begun = time.monotonic()
                result = load.run(latency.job(kind, level, args.seconds, server.port, gateway))
                windows.append((latency.cell_name(kind, level), begun, time.monotonic(), len(result.total)))
                p50, p99 = (percentile(result.ttft, q) * 1000 for q in (0.5, 0.99))
                cell = windows[-1][0]
                log(f"stalls: {cell:10} n {len(result.total):5}  ttft p50/p99 {p50:7.2f} {p99:7.2f} ms")
                settle(0.1)
        stopping = time.monotonic()
        server.stop()
        print(
            f"stopped in {time.monotonic() - stopping:.1f} s, rc {server.popen.returncode}", file=sys.stderr
        )
        if not record.exists():
            print(
                "no record from the gateway:\n" + server.log_path.read_text(errors="replace")[-3000:],
                file=sys.stderr,
            )
            return 1
        data = json.loads(record.read_text())
        if args.json:
            args.json.write_text(json.dumps({"windows": windows, **data}))
    print("\n".join(report(data, windows)))
    return 0


def _start_probed(
    workdir: Path,
    spec: GatewaySpec,
    ollama_port: int,
    record: Path,
    threshold_ms: float,
    sample: bool,
    garbage: bool,
    keep_uvloop: bool,
) -> Server:
    probe = workdir / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text("import bench.stall_probe\nbench.stall_probe.install()\n")
    port = free_port()
    config = gateway_config(workdir, spec, spec.name, ollama_port, 256)
    binary = Path(sys.executable).with_name("citadel-proxy")
    argv = [str(binary), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    env = {"PYTHONPATH": f"{probe}:{REPO}", OUT_ENV: str(record), THRESHOLD_ENV: str(threshold_ms)}
    if sample:
        env[SAMPLE_ENV] = "1"
    if garbage:
        env[GARBAGE_ENV] = "1"
    if keep_uvloop:
        env[UVLOOP_ENV] = "1"
    return Server(spec.name, argv, port, workdir / f"{spec.name}.log", env=env)


def report(data: dict[str, Any], windows: list[tuple[str, float, float, int]]) -> list[str]:
    limit = data["threshold_ms"]
    lines = [
        f"gateway pid {data['pid']}: {data['callbacks']} callbacks, loop busy {data['busy_s']:.1f} s of"
        f" {data['uptime_s']:.1f} s; gc threshold {data['gc_threshold']}, frozen {data['gc_frozen']}",
        f"slow = a callback >= {limit:g} ms; own = of which the gateway's thread spent >= {limit:g} ms of CPU"
        " (the rest were descheduled: another process had the core)",
        "",
        f"{'cell':10} {'answers':>7} {'slow':>5} {'own':>5} {'own max':>7} {'own sum':>7}"
        "  gc: gen n (max wall/cpu ms)",
    ]
    for cell, begun, ended, answers in windows:
        slow = [s for s in data["slow"] if begun <= s["at_s"] <= ended]
        own = [s for s in slow if s["cpu_ms"] >= limit]
        gcs = [c for c in data["collections"] if begun <= c["at_s"] <= ended]
        by_gen: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for c in gcs:
            by_gen[c["gen"]].append(c)
        gc_text = "  ".join(
            f"{g} {len(v)} ({max(c['ms'] for c in v):.2f}/{max(c['cpu_ms'] for c in v):.2f})"
            for g, v in sorted(by_gen.items())
        )
        own_ms = [s["cpu_ms"] for s in own]
        lines.append(
            f"{cell:10} {answers:7d} {len(slow):5d} {len(own):5d}"
            f" {max(own_ms, default=0):7.2f} {sum(own_ms):7.1f}  {gc_text}"
        )
    first, last = (windows[0][1], windows[-1][2]) if windows else (0.0, float("inf"))
    lines += ["", "garbage collections under load (cpu ms):"]
    by_gen_all: dict[int, list[float]] = defaultdict(list)
    for c in data["collections"]:
        if first <= c["at_s"] <= last:
            by_gen_all[c["gen"]].append(c["cpu_ms"])
    for gen, values in sorted(by_gen_all.items()):
        lines.append(
            f"  gen {gen}: {len(values)} collections, median {statistics.median(values):.3f},"
            f" max {max(values):.3f}, total {sum(values):.1f}"
        )
    if data.get("garbage"):
        lines += ["", "found unreachable by the collector (reference cycles), by type:"]
        lines += [f"  {n:7d}  {name}" for name, n in data["garbage"]]
    own = [s for s in data["slow"] if first <= s["at_s"] <= last and s["cpu_ms"] >= limit]
    lines += ["", "own slow callbacks under load, by source (cpu ms):"]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in own:
        groups[source_of(s)].append(s)
    for source, items in sorted(groups.items(), key=lambda kv: -sum(s["cpu_ms"] for s in kv[1])):
        ms = [s["cpu_ms"] for s in items]
        lines.append(
            f"  {len(items):5d} x  median {statistics.median(ms):6.2f}  max {max(ms):6.2f}"
            f"  sum {sum(ms):7.1f}  {source}"
        )
    return lines


def source_of(slow: dict[str, Any]) -> str:
    """The callback, and the gateway frame most samples taken during it were in (the innermost ours)."""
    seen: dict[str, int] = defaultdict(int)
    for stack in slow["samples"]:
        ours = [f for f in stack if f.startswith(_OURS)]
        pick = ours[0] if ours else (stack[0] if stack else "")
        seen[pick] += 1
    where = max(seen, key=lambda k: seen[k]) if seen else "(not sampled)"
    what = slow["what"].split(" now at ")[0]
    return f"{what} | {where}"


if __name__ == "__main__":
    sys.exit(main())
