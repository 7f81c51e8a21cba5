"""Memory per large request: chat bodies of 1, 4 and 13 MB posted to a 1-worker gateway, one and four at a
time, while the worker's RSS is sampled.

Target (issue 12): a request's peak memory at most 4x its body plus 10 MiB (with four in flight, the
growth over the idle worker divided by four), and the memory handed back afterwards: the RSS a second
after the last answer, against the RSS before the first request.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

from bench.procs import BenchError, Server
from bench.scenarios import Target

SIZES_MB = (1, 4, 13)
PARALLEL = (1, 4)
_MB = 1_000_000
_MIB = 1024 * 1024
_SAMPLE_S = 0.005
_SETTLE_S = 1.0
PER_BODY = 4.0  # the target: peak growth per request <= PER_BODY x body + OVERHEAD_MIB
OVERHEAD_MIB = 10.0
# Handed back: a second after the answers, the worker holds at most this much more than before them.
KEPT_MIB = 10.0


@dataclass(frozen=True)
class BodyRun:
    target: str
    size_mb: int
    parallel: int
    rss_before_mib: float
    peak_growth_mib: float  # worker peak minus its RSS before, all requests together
    after_growth_mib: float  # a second after the last answer, minus its RSS before
    statuses: dict[int, int]

    @property
    def per_request_mib(self) -> float:
        return self.peak_growth_mib / self.parallel

    @property
    def limit_mib(self) -> float:
        return PER_BODY * self.size_mb * _MB / _MIB + OVERHEAD_MIB

    @property
    def verdict(self) -> str:
        ok = self.per_request_mib <= self.limit_mib and self.after_growth_mib <= KEPT_MIB
        return "PASS" if ok and set(self.statuses) == {200} else "MISS"

    def line(self) -> str:
        return (
            f"{self.verdict:4}  {self.target:6} {self.size_mb:3} MB x{self.parallel}"
            f"  idle {self.rss_before_mib:6.1f}"
            f"  peak +{self.peak_growth_mib:6.1f} ({self.per_request_mib:6.1f} per request, target <="
            f" {self.limit_mib:5.1f})  after +{self.after_growth_mib:5.1f} (target <= {KEPT_MIB:g})"
            f"  statuses {self.statuses}"
        )


def body_of(size_mb: int) -> bytes:
    """A chat whose one message makes the body `size_mb` MB: a pasted document, the usual large request."""
    head = {"model": "phi3", "max_tokens": 16, "messages": [{"role": "user", "content": ""}]}
    empty = json.dumps(head, separators=(",", ":")).encode()
    text = ("The quick brown fox jumps over the lazy dog. " * (size_mb * _MB // 45 + 1))[
        : size_mb * _MB - len(empty)
    ]
    head["messages"] = [{"role": "user", "content": text}]
    return json.dumps(head, separators=(",", ":")).encode()


def measure_bodies(targets: list[Target], names: tuple[str, ...]) -> tuple[list[BodyRun], dict[str, float]]:
    """Every size and parallelism on each named target, smallest first; and per target, what its worker
    still held after the last run over its RSS before the first large request."""
    runs, kept = [], {}
    for target in (t for t in targets if t.name in names):
        idle = target.server.usage().worker_rss_mib
        for size in SIZES_MB:
            body = body_of(size)
            for parallel in PARALLEL:
                runs.append(_run(target, size, parallel, body))
        kept[target.name] = target.server.usage().worker_rss_mib - idle
    return runs, kept


def _run(target: Target, size_mb: int, parallel: int, body: bytes) -> BodyRun:
    server = target.server
    before = server.usage().worker_rss_mib
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def one() -> None:
        status = _post(target, body)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    peak = _watch(server, threads)
    time.sleep(_SETTLE_S)
    after = server.usage().worker_rss_mib
    return BodyRun(target.name, size_mb, parallel, before, peak - before, after - before, statuses)


def _watch(server: Server, threads: list[threading.Thread]) -> float:
    peak = 0.0
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, server.usage().worker_rss_mib)
        time.sleep(_SAMPLE_S)
    return max(peak, server.usage().worker_rss_mib)


def _post(target: Target, body: bytes) -> int:
    headers = {"Content-Type": "application/json"}
    for line in target.headers.decode().splitlines():
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    except OSError as exc:
        raise BenchError(f"posting a {len(body)} byte body to {target.name}: {exc}") from None
    finally:
        conn.close()
