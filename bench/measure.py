"""One measured run: load from the generator process, CPU and RSS of the target's processes around it."""

from __future__ import annotations

import http.client
import time
from dataclasses import asdict, dataclass

from bench.loadgen import Job, LoadProcess, Result
from bench.procs import BenchError, Usage
from bench.scenarios import Budget, Scenario, Target, job_for

_SAMPLE_S = 0.05


@dataclass(frozen=True)
class Sample:
    """What one run of one scenario against one target measured (times in ms, memory in MiB)."""

    scenario: str
    target: str
    round: int
    requests: int
    errors: int
    elapsed_s: float
    rps: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    cpu_ms_per_request: float
    cpu_us_per_token: float | None
    rss_idle_mib: float
    rss_peak_mib: float
    worker_rss_peak_mib: float
    loadgen_cpu_ms_per_request: float
    statuses: dict[int, int]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; nan when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def measure(load: LoadProcess, target: Target, scenario: Scenario, budget: Budget, round_: int) -> Sample:
    server, _ = target.endpoint(scenario)
    job = job_for(target, scenario, budget)
    if scenario.kind == "embed-hit":
        prime(job)  # the answer is cached before the clock starts, whatever ran before
    before = server.usage()
    load.submit(job)
    peak, worker_peak = before.rss_mib, before.worker_rss_mib
    # Held-open streams: watch memory while they are open; short runs only need the end state.
    while not load.poll(_SAMPLE_S if scenario.slow else 0.5):
        if scenario.slow:
            now = server.usage()
            peak, worker_peak = max(peak, now.rss_mib), max(worker_peak, now.worker_rss_mib)
    result = load.result()
    after = server.usage()
    peak, worker_peak = max(peak, after.rss_mib), max(worker_peak, after.worker_rss_mib)
    return _sample(scenario, target, round_, result, before, after, peak, worker_peak)


def _sample(
    scenario: Scenario,
    target: Target,
    round_: int,
    result: Result,
    before: Usage,
    after: Usage,
    peak: float,
    worker_peak: float,
) -> Sample:
    done = len(result.total)
    cpu_ms = (after.cpu_s - before.cpu_s) * 1000
    per_request = cpu_ms / done if done else float("nan")
    tokens = done * scenario.tokens if scenario.streams else 0
    return Sample(
        scenario=scenario.name,
        target=target.name,
        round=round_,
        requests=done,
        errors=result.errors,
        elapsed_s=result.elapsed_s,
        rps=done / result.elapsed_s if result.elapsed_s else 0.0,
        ttft_p50_ms=percentile(result.ttft, 0.50) * 1000,
        ttft_p99_ms=percentile(result.ttft, 0.99) * 1000,
        total_p50_ms=percentile(result.total, 0.50) * 1000,
        total_p99_ms=percentile(result.total, 0.99) * 1000,
        cpu_ms_per_request=per_request,
        cpu_us_per_token=cpu_ms * 1000 / tokens if tokens else None,
        rss_idle_mib=before.rss_mib,
        rss_peak_mib=peak,
        worker_rss_peak_mib=worker_peak,
        loadgen_cpu_ms_per_request=result.cpu_s * 1000 / done if done else float("nan"),
        statuses=dict(result.statuses),
    )


def prime(job: Job) -> None:
    """Send the job's request once and read the answer (from here: not billed to the run)."""
    headers = {"Content-Type": "application/json"}
    for line in job.headers.decode().splitlines():
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    conn = http.client.HTTPConnection(job.host, job.port, timeout=30)
    try:
        conn.request("POST", job.path, body=job.body, headers=headers)
        answer = conn.getresponse()
        answer.read()
    finally:
        conn.close()
    if answer.status != 200:
        raise BenchError(f"priming POST {job.path} on port {job.port} answered {answer.status}")


def settle(seconds: float = 0.05) -> None:
    """A pause between runs so closing connections are not billed to the next run."""
    time.sleep(seconds)
