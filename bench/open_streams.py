"""Issue 17, scenario 2: ten thousand open streams on one worker, and a new request's latency meanwhile.

Voice streams of 25 tokens a second apart (`timed-1000-1000`: 26 s a stream), each on a connection of its
own, opened at 1000 a second by the load generator's process (at most 64 connects in flight; uvicorn's
listen backlog is 2048), through one uvicorn worker: uv-1w (bare pipelines) and, in a full run, uv-full
(every stage: audit to PostgreSQL, rate limits in Redis), one after the other, the order alternating by
round. Checked: every stream ends with all its tokens (counted by the load generator), the worker's peak
RSS (sampled every 0.1 s), and, once the worker holds a client and an Ollama connection for every stream,
until the first stream ends, a probe: a second load generator process sends short voice streams
(`timed-5-0`, 4 tokens) one at a time, for PROBE_SLICE_S to the gateway, then as long straight to the
fake, in turn; the probe's added TTFT is the gateway's p50/p99 minus direct's over that window. The
bench raises its file limit for itself and the processes it starts (a worker holds two descriptors per
stream); where the hard limit is too low for that, it holds as many streams as the limit allows and
says so.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench.loadgen import Job, LoadProcess, Result
from bench.measure import percentile
from bench.procs import Server
from bench.report import Check
from bench.scale import Gateway, Spread, log, start_fake_for, start_gateways
from bench.scenarios import SSE_TOKEN

STREAMS = 10_000
QUICK_STREAMS = 2_000
MODEL = "timed-1000-1000"
FIRST_S = GAP_S = 1.0
PROBE_MODEL = "timed-5-0"
PROBE_TOKENS = 4
PROBE_SLICE_S = 0.5
PEAK_RSS_MIB = 250.0
PROBE_TTFT_P99_MS = 5.0
# Descriptors a worker holds besides its streams' (listener, pools, logs, PostgreSQL, Redis).
SPARE_FDS = 300
_PATH = "/v1/voice/chat/completions"
_MESSAGES = [{"role": "user", "content": "Say something."}]
_SAMPLE_S = 0.1


@dataclass(frozen=True)
class Plan:
    """How many streams, how many tokens each (a second apart), opened how fast."""

    streams: int
    tokens: int
    ramp_per_s: float

    @property
    def stream_s(self) -> float:
        """From a stream's request to its last line."""
        return FIRST_S + GAP_S * self.tokens


# 10 s to open them all, 26 s a stream: all are open together for 16 s, or still a few seconds where a
# busy machine lets the worker take only 400 new streams a second. Voice's deadline is 30 s a stream.
FULL_PLAN = Plan(STREAMS, 25, 1000.0)
QUICK_PLAN = Plan(QUICK_STREAMS, 8, 1000.0)


@dataclass
class Hold:
    """One target holding the streams once (times in ms, memory in MiB)."""

    target: str
    round: int
    streams: int
    tokens_each: int
    answered: int  # streams that ended with status 200
    errors: int
    tokens: int  # tokens delivered, all streams together
    complete: int  # streams that delivered every token
    ramp_s: float  # until the last stream's request was sent
    open_peak: int  # streams open at once, at most (answer heads read, ends not yet, at the generator)
    probe_from_s: float  # when the probes began (every stream open), from the start
    probe_s: float  # how long they ran
    loadgen_cpu_percent: float  # the holding generator's CPU over the run (one core = 100)
    worker_rss_idle_mib: float
    worker_rss_peak_mib: float
    worker_fds_peak: int
    worker_cpu_s: float
    probe_gateway: int  # probe answers
    probe_direct: int
    probe_errors: int  # probes that failed (either target)
    probe_gateway_ttft_p50_ms: float
    probe_gateway_ttft_p99_ms: float
    probe_direct_ttft_p50_ms: float
    probe_direct_ttft_p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def added_ttft_p50_ms(self) -> float:
        return self.probe_gateway_ttft_p50_ms - self.probe_direct_ttft_p50_ms

    @property
    def added_ttft_p99_ms(self) -> float:
        return self.probe_gateway_ttft_p99_ms - self.probe_direct_ttft_p99_ms

    @property
    def delivered(self) -> bool:
        return self.errors == 0 and self.complete == self.streams


def _body(model: str, tokens: int, direct: bool) -> bytes:
    if direct:
        body: dict[str, object] = {
            "model": model + ":latest",
            "messages": _MESSAGES,
            "stream": True,
            "options": {"num_predict": tokens},
        }
    else:
        body = {"model": model, "messages": _MESSAGES, "max_tokens": tokens, "stream": True}
    return json.dumps(body, separators=(",", ":")).encode()


def hold_job(port: int, plan: Plan, headers: bytes) -> Job:
    ramp_s = plan.streams / plan.ramp_per_s
    return Job(
        port, _PATH, _body(MODEL, plan.tokens, direct=False), plan.streams, plan.streams, ramp_s + 60.0,
        SSE_TOKEN, one_per_connection=True, headers=headers, count=SSE_TOKEN, ramp_per_s=plan.ramp_per_s,
        grace_s=plan.stream_s + 60.0,
    )  # fmt: skip


def probe_job(port: int, gateway: Gateway | None) -> Job:
    if gateway is None:
        return Job(port, "/api/chat", _body(PROBE_MODEL, PROBE_TOKENS, True), 1, 10_000_000, PROBE_SLICE_S)
    body = _body(PROBE_MODEL, PROBE_TOKENS, direct=False)
    return Job(port, _PATH, body, 1, 10_000_000, PROBE_SLICE_S, SSE_TOKEN, headers=gateway.headers)


class Sampler:
    """The worker's RSS and the streams open every 0.1 s, its descriptors every 0.5 s, in a thread."""

    def __init__(self, server: Server, load: LoadProcess) -> None:
        self.server, self.load = server, load
        self.rss_peak = server.usage().worker_rss_mib
        self.fds_peak = self.open_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="bench-sampler")
        self._thread.start()

    def _watch(self) -> None:
        ticks = 0
        while not self._stop.wait(_SAMPLE_S):
            self.rss_peak = max(self.rss_peak, self.server.usage().worker_rss_mib)
            self.open_peak = max(self.open_peak, self.load.open_answers)
            ticks += 1
            if ticks % 5 == 0:
                self.fds_peak = max(self.fds_peak, fds(self.server))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, self.server.usage().worker_rss_mib)


def fds(server: Server) -> int:
    count = 0
    for process in server.processes():
        with contextlib.suppress(psutil.Error):
            count = max(count, process.num_fds())
    return count


def hold(
    load: LoadProcess,
    probe: LoadProcess,
    name: str,
    gateway: Gateway,
    fake: Server,
    plan: Plan,
    round_: int,
) -> Hold:
    server = gateway.server
    idle = server.usage()
    sampler = Sampler(server, load)
    started = time.monotonic()
    load.submit(hold_job(server.port, plan, gateway.headers))
    # Probes run while every stream is open: from when the generator has the head of every answer (and
    # half a second more) until the first stream ends; where the ramp outlasts the first streams, in their
    # last 5 s (the table says so).
    end = started + plan.stream_s - 0.5
    while load.open_answers < plan.streams and time.monotonic() < end - 5.0:
        time.sleep(0.1)
    time.sleep(0.5)
    begin = time.monotonic()
    ttft: dict[str, list[float]] = {"gateway": [], "direct": []}
    turn, failed = round_ % 2, 0
    while time.monotonic() + PROBE_SLICE_S < end:
        which = ("gateway", "direct")[turn]
        port, through = (server.port, gateway) if which == "gateway" else (fake.port, None)
        answered = probe.run(probe_job(port, through))
        ttft[which] += answered.ttft
        failed += answered.errors
        turn = 1 - turn
    probed = time.monotonic() - begin
    result: Result = load.result()
    sampler.stop()
    after = server.usage()
    return Hold(
        target=name,
        round=round_,
        streams=plan.streams,
        tokens_each=plan.tokens,
        answered=len(result.total),
        errors=result.errors,
        tokens=sum(result.tokens),
        complete=sum(1 for t in result.tokens if t == plan.tokens),
        ramp_s=result.ramp_s,
        open_peak=sampler.open_peak,
        probe_from_s=begin - started,
        probe_s=probed,
        loadgen_cpu_percent=result.cpu_s / result.elapsed_s * 100 if result.elapsed_s else float("nan"),
        worker_rss_idle_mib=idle.worker_rss_mib,
        worker_rss_peak_mib=sampler.rss_peak,
        worker_fds_peak=sampler.fds_peak,
        worker_cpu_s=after.cpu_s - idle.cpu_s,
        probe_gateway=len(ttft["gateway"]),
        probe_direct=len(ttft["direct"]),
        probe_errors=failed,
        probe_gateway_ttft_p50_ms=percentile(ttft["gateway"], 0.50) * 1000,
        probe_gateway_ttft_p99_ms=percentile(ttft["gateway"], 0.99) * 1000,
        probe_direct_ttft_p50_ms=percentile(ttft["direct"], 0.50) * 1000,
        probe_direct_ttft_p99_ms=percentile(ttft["direct"], 0.99) * 1000,
        statuses=dict(result.statuses),
    )


def _drained(server: Server, timeout_s: float = 20.0) -> None:
    """Wait until the worker has closed what it will of the streams' connections (its Ollama pool keeps
    some), or the timeout passes."""
    deadline, last = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline and (now := fds(server)) != last:
        last = now
        time.sleep(0.5)


def measure(targets: list[str], plan: Plan, rounds: int, notes: list[str]) -> list[Hold]:
    holds: list[Hold] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citadel-bench-streams-")))
        log(f"streams10k: starting a fake Ollama and {', '.join(targets)}")
        fake = start_fake_for(stack, workdir, "fake-streams")
        gateways = start_gateways(stack, workdir, targets, fake.port, plan.streams + 256, notes, "-streams")
        load, probe = LoadProcess(count_open=True), LoadProcess()
        stack.callback(load.close)
        stack.callback(probe.close)
        order = list(gateways.items())
        for _, gateway in order:  # code imported and the probe's path warm before anything counts
            probe.run(probe_job(gateway.server.port, gateway))
        probe.run(probe_job(fake.port, None))
        for round_ in range(1, rounds + 1):
            for name, gateway in order if round_ % 2 else order[::-1]:
                log(f"streams10k round {round_}/{rounds}: {plan.streams} streams through {name}")
                found = hold(load, probe, name, gateway, fake, plan, round_)
                holds.append(found)
                log(
                    f"streams10k round {round_}/{rounds} {name}: {found.complete}/{plan.streams} complete,"
                    f" tokens {found.tokens}/{plan.streams * plan.tokens}, errors {found.errors},"
                    f" ramp {found.ramp_s:.1f} s, open at once {found.open_peak},"
                    f" probes from {found.probe_from_s:.1f} s for {found.probe_s:.1f} s,"
                    f" worker RSS {found.worker_rss_idle_mib:.0f} -> {found.worker_rss_peak_mib:.0f} MiB,"
                    f" fds {found.worker_fds_peak}, probe ttft p99 gateway"
                    f" {found.probe_gateway_ttft_p99_ms:.2f} direct {found.probe_direct_ttft_p99_ms:.2f} ms"
                    f" (n {found.probe_gateway}/{found.probe_direct}),"
                    f" loadgen cpu {found.loadgen_cpu_percent:.0f}%"
                )
                _drained(gateway.server)
    return holds


def checks(holds: list[Hold], streams: int) -> list[Check]:
    """`streams`: the number asked for (the holds may have fewer, where the file limit is lower)."""
    checked = []
    for name in dict.fromkeys(h.target for h in holds):
        mine = [h for h in holds if h.target == name]
        held = min(h.streams for h in mine)
        complete = min(h.complete for h in mine)
        added = statistics.median(h.added_ttft_p99_ms for h in mine)
        worst = max(mine, key=lambda h: h.worker_rss_peak_mib)
        rss, how = worst.worker_rss_peak_mib, f"{name}, worst round"
        if held < streams:
            # The file limit held fewer: what the streams held cost, scaled to the number asked for.
            grown = worst.worker_rss_peak_mib - worst.worker_rss_idle_mib
            rss = worst.worker_rss_idle_mib + grown * streams / worst.streams
            how += f", {worst.worker_rss_peak_mib:.0f} MiB at {worst.streams} held, scaled to {streams}"
        checked += [
            Check("streams held, every token delivered", complete, held, True, "streams",
                  f"{name}, worst round, {held} held of {streams} asked"
                  + (" (the file limit)" if held < streams else "")),
            Check(f"peak worker RSS, {streams} streams open", rss, PEAK_RSS_MIB, False, "MiB", how),
            Check("a new request's added TTFT p99, streams open", added, PROBE_TTFT_P99_MS, False, "ms",
                  f"{name}, median of rounds"),
        ]  # fmt: skip
    return checked


def table(holds: list[Hold]) -> list[str]:
    head = (
        f"{'target':8} {'round':>5} {'complete':>9} {'tokens':>8} {'errors':>6} {'ramp s':>6}"
        f" {'at once':>7} {'RSS idle':>8} {'RSS peak':>8} {'gw cpu s':>8} {'lg cpu%':>7}"
        f" {'probe s':>7} {'probe n':>11} {'direct p50/p99':>15} {'added p50':>9} {'added p99':>9}"
    )
    lines = [head, "-" * len(head)]
    for h in holds:
        lines.append(
            f"{h.target:8} {h.round:5d} {h.complete:9d} {h.tokens:8d} {h.errors:6d} {h.ramp_s:6.1f}"
            f" {h.open_peak:7d} {h.worker_rss_idle_mib:8.1f} {h.worker_rss_peak_mib:8.1f}"
            f" {h.worker_cpu_s:8.1f} {h.loadgen_cpu_percent:7.0f} {h.probe_s:7.1f}"
            f" {f'{h.probe_gateway}/{h.probe_direct}':>11}"
            f" {f'{h.probe_direct_ttft_p50_ms:.2f}/{h.probe_direct_ttft_p99_ms:.2f}':>15}"
            f" {h.added_ttft_p50_ms:+9.2f} {h.added_ttft_p99_ms:+9.2f}"
        )
    for name in dict.fromkeys(h.target for h in holds):
        mine = [h for h in holds if h.target == name]
        rss = Spread.of(h.worker_rss_peak_mib for h in mine).text(sign=False)
        added = Spread.of(h.added_ttft_p99_ms for h in mine).text()
        lines.append(f"{name}: peak RSS {rss} MiB, probe added TTFT p99 {added} ms (median of rounds, range)")
        if short := [h.round for h in mine if h.open_peak < h.streams * 0.99]:
            lines.append(
                f"{name}: in round(s) {short} the streams were never all open at once (the ramp outlasted"
                " the first ones): the probes ran meanwhile, under fewer"
            )
    return lines


def to_json(holds: list[Hold], listed: list[Check]) -> dict[str, object]:
    return {
        "holds": [
            {**asdict(h), "added_ttft_p50_ms": h.added_ttft_p50_ms, "added_ttft_p99_ms": h.added_ttft_p99_ms}
            for h in holds
        ],
        "checks": [{**asdict(c), "verdict": c.verdict} for c in listed],
    }
