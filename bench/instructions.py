"""`python -m bench.instructions`: instructions per request of one gateway, counted by callgrind.

The gateway runs as the bench runs it (`citadel-proxy serve`, one worker; uv-1w with the bare pipelines
or uv-full with every stage, PostgreSQL and Redis) under `valgrind --tool=callgrind`. After a warm-up
the counters are zeroed (`callgrind_control --zero`), the load generator sends `--requests` requests at
`--concurrency`, and the counters are dumped: the total over the requests, divided by their number.
Unlike the bench's CPU figures these do not move with whatever else the machine runs; they do weigh
timer-driven work (audit batches, lease renewals) more, since callgrind slows the worker some 50 times.
`--drop-stage NAME` takes one stage out of every pipeline (uv-full), to see what it costs. `--keep FILE`
keeps callgrind's output for `callgrind_annotate --inclusive=yes FILE` (where the instructions went).

An idle gateway works too (uvicorn's tick, the metrics fold, the audit writer's wait, the key-change
listener's poll), a fixed amount a second; under callgrind a request takes some 30 to 50 times longer, so
that work weighs that much more per request than at full speed. After the requests the worker is left
idle for as long as they took (at most `IDLE_MOST_S`) and counted again: the second figure printed is
per request less what the idle worker does in that time, the closer to what a request costs a worker
that serves many a second. Work that comes with the load but on a timer (an audit batch every 10 ms,
a rate-limit lease renewed) stays in it, still weighed more than at full speed. The audit writer's is
the largest: it waits `audit.linger_s` (10 ms) for a batch to fill, which at full speed (some 5,000
chats a second at c8) gathers about fifty records and under callgrind one or two, so the cost of a
batch weighs some 30 times more on each record. `--audit-linger-s 0.3` (what `make bench`'s section
uses, the worker serving some 170 chats a second under callgrind) gathers batches of the full-speed
size again.

    python -m bench.instructions --target uv-full --kind chat
    python -m bench.instructions --target uv-full --kind chat --drop-stage rate_limit
    python -m bench.instructions --target uv-full --kind chat --audit-linger-s 0.3

`--cache-sim` has callgrind simulate the caches too (CACHE_SIM: first-level caches of 32 KiB and a last
level of 1 MiB, one core's L2 on the machines this was measured on) and prints a request's misses beside
its instructions: where memory, rather than the count of instructions, sets what a request costs.
Under callgrind the load's timers weigh more a request than at full speed, as above.

    python -m bench.instructions --target uv-full --audit-linger-s 0.3 --cache-sim
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.full import gateway_spec, with_audit_linger
from bench.loadgen import Job, LoadProcess
from bench.procs import Server, free_port, gateway_config, start_fake
from bench.report import FULL_CPU_RATIO, Check
from bench.scale import BARE_NAME, FULL_NAME
from bench.scenarios import SSE_TOKEN

_KINDS = {"chat": ("/v1/chat/completions", False), "voice": ("/v1/voice/chat/completions", True)}
_WARM_UP = 300
IDLE_MOST_S = 120.0
# `make bench`'s section (bench/front.py): the ratio issue 17 checks in CPU, counted in instructions.
NAME = "instructions"
SECTION_REQUESTS = 2000
SECTION_CONCURRENCY = 8
# Under callgrind (some 170 chats a second) this gathers audit batches of about their size at full speed
# (`audit.linger_s`, 10 ms, at some 5,000 chats a second): about fifty records.
FULL_SPEED_LINGER_S = 0.3
# callgrind's cache simulation (`--cache-sim`): 32 KiB first-level caches and a 1 MiB last level, the
# per-core L1 and L2 of the machines it was first run on (their L3 is shared with other guests).
CACHE_SIM = ("--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")


@dataclasses.dataclass(frozen=True)
class Counted:
    """Instructions per request, and those the idle worker spent in as long as the requests took."""

    requests: int
    total: int
    seconds: float
    idle: int
    idle_seconds: float
    # The requests' count of each event callgrind recorded (Ir, and with CACHE_SIM the misses), as
    # counted: the idle worker's are not taken off.
    events: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def per_request(self) -> float:
        return self.total / self.requests

    @property
    def idle_per_s(self) -> float:
        """The idle worker's instructions a second."""
        return self.idle / self.idle_seconds if self.idle_seconds > 0 else 0.0

    @property
    def less_idle(self) -> float:
        """Per request, less the idle worker's instructions over the same time."""
        return (self.total - self.idle_per_s * self.seconds) / self.requests


def events(text: str) -> dict[str, int]:
    """Each event a callgrind output file counted (`events:` names them), from its `totals:` line, else
    its `summary:` line."""
    names = re.search(r"^events:\s*(.+)$", text, re.MULTILINE)
    for line in ("totals", "summary"):
        found = re.search(rf"^{line}:\s*([\d ]+)$", text, re.MULTILINE)
        if names is not None and found is not None:
            return dict(zip(names[1].split(), map(int, found[1].split()), strict=False))
    raise ValueError("no events with totals or summary lines: not a callgrind output file")


def misses_line(counted: Counted) -> str:
    """A request's cache misses as `--cache-sim` counted them (first level, then last level)."""
    per = {name: count / counted.requests for name, count in counted.events.items()}
    last = per.get("ILmr", 0) + per.get("DLmr", 0) + per.get("DLmw", 0)
    return (
        f"cache misses a request: first level, instructions {per.get('I1mr', 0):,.0f}, data"
        f" {per.get('D1mr', 0):,.0f} read / {per.get('D1mw', 0):,.0f} write; last level {last:,.0f}"
        f" (instructions {per.get('ILmr', 0):,.0f}, data {per.get('DLmr', 0):,.0f} read /"
        f" {per.get('DLmw', 0):,.0f} write)"
    )


def summary(text: str) -> int:
    """The instructions a callgrind output file counted: from its `totals:` line (every cost the file
    holds, what `callgrind_annotate` adds up), else its `summary:` line."""
    return events(text)["Ir"]


@dataclasses.dataclass(frozen=True)
class Ratio:
    """uv-full over uv-1w, chat, in instructions a request: what `make bench` prints as its section."""

    bare: Counted
    full: Counted

    @property
    def value(self) -> float:
        return self.full.less_idle / self.bare.less_idle

    def check(self) -> Check:
        where = f"{FULL_NAME} / {BARE_NAME}, chat c{SECTION_CONCURRENCY}, idle work taken off"
        return Check(
            "instructions per request, all stages / bare", self.value, FULL_CPU_RATIO, False, "x", where
        )

    def lines(self) -> list[str]:
        def one(name: str, counted: Counted) -> str:
            return (
                f"{name}: {counted.per_request / 1000:.1f} K a request,"
                f" {counted.less_idle / 1000:.1f} K less the idle worker's"
                f" ({counted.idle_per_s / 1e6:.2f} M a second idle,"
                f" {counted.requests} requests in {counted.seconds:.0f} s)"
            )

        return [
            "Instructions per request (callgrind; issue 17, item 4, in a measure the machine's load does not"
            f" move): chat c{SECTION_CONCURRENCY}, {SECTION_REQUESTS} requests after a warm-up;"
            f" {FULL_NAME}'s audit writer waits {FULL_SPEED_LINGER_S:g} s for a batch, so that its batches"
            " are about the size they are at full speed (bench/instructions.py):",
            "  " + one(BARE_NAME, self.bare),
            "  " + one(FULL_NAME, self.full),
            f"  ratio {self.full.per_request / self.bare.per_request:.3f} as counted,"
            f" {self.value:.3f} less the idle work",
            "  " + self.check().line(),
        ]

    def to_json(self) -> dict[str, object]:
        check = self.check()
        return {
            "bare": dataclasses.asdict(self.bare),
            "full": dataclasses.asdict(self.full),
            "ratio": self.value,
            "check": {**dataclasses.asdict(check), "verdict": check.verdict},
        }


def _no_valgrind() -> str | None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return "valgrind is not installed (Debian: apt install valgrind)"
    return None


def section(notes: list[str]) -> Ratio | None:
    """The ratio `make bench` prints; None, with a note, without valgrind or PostgreSQL and Redis."""
    if missing := _no_valgrind():
        notes.append(f"instructions: {missing}: section skipped")
        return None
    try:
        bare = count(BARE_NAME, "chat", SECTION_REQUESTS, SECTION_CONCURRENCY, None)
        full = count(
            FULL_NAME, "chat", SECTION_REQUESTS, SECTION_CONCURRENCY, None, audit_linger_s=FULL_SPEED_LINGER_S
        )
    except SystemExit as exc:
        notes.append(f"instructions: {exc}: section skipped")
        return None
    return Ratio(bare, full)


def count(
    target: str,
    kind: str,
    requests: int,
    concurrency: int,
    drop_stage: str | None,
    keep: Path | None = None,
    audit_linger_s: float | None = None,
    cache_sim: bool = False,
) -> Counted:
    """Instructions per request of `target` serving `requests` of `kind`."""
    path, stream = _KINDS[kind]
    body = {"model": "phi3", "messages": [{"role": "user", "content": "Say something."}], "stream": stream}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-instructions-")))
        fake = start_fake("fake", workdir, 64, 0.0)
        stack.callback(fake.stop)
        notes: list[str] = []
        full = target == FULL_NAME
        found = gateway_spec(stack, workdir, target, full=full, notes=notes, without=drop_stage)
        if found is None:
            raise SystemExit(f"bench.instructions: {notes[0]}")
        spec, headers = found
        if audit_linger_s is not None and spec.extra:
            spec = with_audit_linger(spec, audit_linger_s)
        port = free_port()
        config = gateway_config(workdir, spec, spec.name, fake.port, 256)
        out = workdir / "callgrind.out"
        binary = Path(sys.executable).with_name("citadel-proxy")
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
        argv += CACHE_SIM if cache_sim else ()
        argv += [sys.executable, str(binary), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
        server = Server(spec.name, [*argv, "--workers", "1"], port, workdir / "gateway.log")
        stack.callback(server.stop)
        server.wait_ready("/health", timeout_s=600.0)
        load = LoadProcess()
        stack.callback(load.close)
        encoded = json.dumps(body).encode()
        marker = SSE_TOKEN if stream else b""

        def run(n: int) -> Any:
            return load.run(Job(port, path, encoded, concurrency, n, 900.0, marker, headers=headers))

        run(_WARM_UP)
        time.sleep(1.0)
        pid = str(server.popen.pid)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
        started = time.monotonic()
        result = run(requests)
        seconds = time.monotonic() - started
        counts = events(_dump(pid, workdir, 1, keep))
        if result.errors:
            raise SystemExit(f"bench.instructions: {result.errors} requests failed")
        idle_s = min(seconds, IDLE_MOST_S)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
        time.sleep(idle_s)
        idle = summary(_dump(pid, workdir, 2, None))
        return Counted(len(result.total), counts["Ir"], seconds, idle, idle_s, counts)


def _dump(pid: str, workdir: Path, nth: int, keep: Path | None) -> str:
    """What callgrind counted since the counters were zeroed: the worker's `nth` dump, as written."""
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    for _ in range(100):  # the dump is written by the worker: wait for it
        dumps = sorted(workdir.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if len(dumps) >= nth:
            if keep is not None:
                shutil.copyfile(dumps[nth - 1], keep)
            return dumps[nth - 1].read_text()
        time.sleep(0.1)
    raise SystemExit("bench.instructions: callgrind wrote no dump")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=(BARE_NAME, FULL_NAME), default=FULL_NAME)
    parser.add_argument("--kind", choices=sorted(_KINDS), default="chat")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--drop-stage", metavar="NAME", help="take this stage out of every pipeline")
    parser.add_argument("--keep", metavar="FILE", type=Path, help="keep callgrind's output here")
    parser.add_argument(
        "--audit-linger-s",
        type=float,
        metavar="S",
        help="uv-full: the audit writer's wait for a batch (0.3: batches of the full-speed size)",
    )
    parser.add_argument("--cache-sim", action="store_true", help="simulate the caches too (CACHE_SIM)")
    args = parser.parse_args(argv)
    if missing := _no_valgrind():
        raise SystemExit(f"bench.instructions: {missing}")
    asked = (args.target, args.kind, args.requests, args.concurrency, args.drop_stage)
    counted = count(*asked, args.keep, args.audit_linger_s, args.cache_sim)
    dropped = f" without {args.drop_stage}" if args.drop_stage else ""
    if args.audit_linger_s is not None and args.target == FULL_NAME:
        dropped += f", audit linger {args.audit_linger_s:g} s"
    cell = f"{args.target}{dropped}, {args.kind} c{args.concurrency}"
    print(
        f"{cell}: {counted.per_request / 1000:.1f} K instructions a request;"
        f" {counted.less_idle / 1000:.1f} K less the idle worker's"
        f" ({counted.idle_per_s / 1e6:.2f} M a second, {counted.seconds:.0f} s of requests)"
    )
    if args.cache_sim:
        print(misses_line(counted))


if __name__ == "__main__":
    main()
