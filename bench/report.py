"""Medians over rounds, figures added against direct, the aligned table, the targets and the JSON."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.measure import Sample

DIRECT = "direct"
GATEWAY_1W = "hc-1w"
GATEWAY_2W = "hc-2w"
UVICORN_1W = "uv-1w"
UVICORN_2W = "uv-2w"
FULL = "uv-full"
# Every stage on (auth, rate limit in Redis, audit to PostgreSQL, metrics) costs at most this times bare
# (issue 17).
FULL_CPU_RATIO = 1.6
_KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Row:
    """One scenario on one target, medians over rounds (added = target minus direct in the same round)."""

    scenario: str
    target: str
    rounds: int
    requests: int
    errors: int
    rps: float
    rps_ratio: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    added_ttft_p50_ms: float
    added_ttft_p99_ms: float
    added_total_p50_ms: float
    added_total_p99_ms: float
    cpu_ms_per_request: float
    cpu_us_per_token: float | None
    rss_peak_mib: float
    worker_rss_peak_mib: float
    kib_per_stream: float | None  # held-open streams only: (peak - idle) / streams, worst round
    loadgen_cpu_ms_per_request: float


def _median(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else float("nan")


def rows(samples: list[Sample], streams_by_scenario: dict[str, int]) -> list[Row]:
    by_key: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        by_key.setdefault((sample.scenario, sample.target), []).append(sample)
    direct = {(s.scenario, s.round): s for s in samples if s.target == DIRECT}
    return [_row(group, direct, streams_by_scenario.get(key[0])) for key, group in by_key.items()]


def _row(group: list[Sample], direct: dict[tuple[str, int], Sample], streams: int | None) -> Row:
    def added(field: str) -> float:
        pairs = [(s, direct.get((s.scenario, s.round))) for s in group]
        return _median(getattr(s, field) - getattr(d, field) for s, d in pairs if d is not None)

    def ratio(s: Sample) -> float | None:
        d = direct.get((s.scenario, s.round))
        return s.rps / d.rps if d is not None and d.rps else None

    per_stream = None
    if streams:
        per_stream = max((s.rss_peak_mib - s.rss_idle_mib) * _KIB_PER_MIB / streams for s in group)
    tokens = [s.cpu_us_per_token for s in group]
    first = group[0]
    return Row(
        scenario=first.scenario,
        target=first.target,
        rounds=len(group),
        requests=sum(s.requests for s in group),
        errors=sum(s.errors for s in group),
        rps=_median(s.rps for s in group),
        rps_ratio=_median(ratio(s) for s in group),
        ttft_p50_ms=_median(s.ttft_p50_ms for s in group),
        ttft_p99_ms=_median(s.ttft_p99_ms for s in group),
        total_p50_ms=_median(s.total_p50_ms for s in group),
        total_p99_ms=_median(s.total_p99_ms for s in group),
        added_ttft_p50_ms=added("ttft_p50_ms"),
        added_ttft_p99_ms=added("ttft_p99_ms"),
        added_total_p50_ms=added("total_p50_ms"),
        added_total_p99_ms=added("total_p99_ms"),
        cpu_ms_per_request=_median(s.cpu_ms_per_request for s in group),
        cpu_us_per_token=None if tokens[0] is None else _median(tokens),
        rss_peak_mib=max(s.rss_peak_mib for s in group),
        worker_rss_peak_mib=max(s.worker_rss_peak_mib for s in group),
        kib_per_stream=per_stream,
        loadgen_cpu_ms_per_request=_median(s.loadgen_cpu_ms_per_request for s in group),
    )


_COLUMNS: list[tuple[str, Callable[[Row], str]]] = [
    ("scenario", lambda r: r.scenario),
    ("target", lambda r: r.target),
    ("req/s", lambda r: f"{r.rps:.0f}"),
    ("x direct", lambda r: f"{r.rps_ratio:.2f}"),
    ("ttft p50", lambda r: f"{r.ttft_p50_ms:.3f}"),
    ("ttft p99", lambda r: f"{r.ttft_p99_ms:.3f}"),
    ("+ttft p50", lambda r: _added(r, r.added_ttft_p50_ms)),
    ("+ttft p99", lambda r: _added(r, r.added_ttft_p99_ms)),
    ("+total p50", lambda r: _added(r, r.added_total_p50_ms)),
    ("+total p99", lambda r: _added(r, r.added_total_p99_ms)),
    ("cpu ms/req", lambda r: f"{r.cpu_ms_per_request:.3f}"),
    ("cpu us/tok", lambda r: "-" if r.cpu_us_per_token is None else f"{r.cpu_us_per_token:.2f}"),
    ("rss MiB", lambda r: f"{r.rss_peak_mib:.1f}"),
    ("worker MiB", lambda r: f"{r.worker_rss_peak_mib:.1f}"),
    ("KiB/stream", lambda r: "-" if r.kib_per_stream is None else f"{r.kib_per_stream:.1f}"),
    ("errors", lambda r: str(r.errors)),
]


def _added(row: Row, value: float) -> str:
    return "-" if row.target == DIRECT else f"{value:+.3f}"


def table(found: list[Row]) -> str:
    cells = [[name for name, _ in _COLUMNS]] + [[cell(row) for _, cell in _COLUMNS] for row in found]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = []
    for index, line in enumerate(cells):
        left = line[:2]
        right = line[2:]
        text = "  ".join(c.ljust(w) for c, w in zip(left, widths[:2], strict=True))
        text += "  " + "  ".join(c.rjust(w) for c, w in zip(right, widths[2:], strict=True))
        lines.append(text.rstrip())
        if index == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    goal: str
    value: float | None
    limit: float
    higher_is_better: bool
    unit: str
    where: str

    @property
    def verdict(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "N/A"
        good = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if good else "MISS"

    def line(self) -> str:
        value = "n/a" if self.value is None or math.isnan(self.value) else f"{self.value:.3f}"
        sign = ">=" if self.higher_is_better else "<="
        goal = f"{self.verdict:4}  {self.goal:42} {value:>10} {self.unit:5}"
        return f"{goal} (target {sign} {self.limit:g}; {self.where})"


def checks(found: list[Row], one: str = GATEWAY_1W, two: str = GATEWAY_2W) -> list[Check]:
    """The issue's targets on server `one` (one worker; `two` for RSS per worker), worst concurrency."""

    def pick(prefix: str, target: str = one) -> list[Row]:
        return [r for r in found if r.target == target and r.scenario.startswith(prefix)]

    c1 = pick("voice c1") + pick("stream c1")
    slow = pick("slow") + pick("slow", two)
    worst_c = f"{one}, worst of c1/c8/c32"
    return [
        Check("CPU per non-streaming chat", _largest(r.cpu_ms_per_request for r in pick("chat ")),
              0.5, False, "ms", worst_c),
        Check("CPU per forwarded token, voice", _largest(r.cpu_us_per_token for r in pick("voice c")),
              20, False, "us", worst_c + " (a whole stream per read)"),
        Check("CPU per forwarded token, voice, paced",
              _largest(r.cpu_us_per_token for r in pick("voice paced")),
              20, False, "us", f"{one}, c16, one token per read 2 ms apart"),
        Check("added TTFT p50 at c1", _largest(r.added_ttft_p50_ms for r in c1),
              1, False, "ms", f"{one}, worst of voice/stream"),
        Check("added TTFT p99 at c1", _largest(r.added_ttft_p99_ms for r in c1),
              3, False, "ms", f"{one}, worst of voice/stream"),
        Check("non-streaming chats/s, one worker", _largest(r.rps for r in pick("chat ")),
              1500, True, "req/s", f"{one}, best of c1/c8/c32"),
        Check("64-token streams/s", _largest(r.rps for r in pick("stream ")),
              400, True, "req/s", f"{one} /v1/chat/completions, best of c1/c8/c32"),
        Check("RSS per open idle stream", _largest(r.kib_per_stream for r in pick("slow")),
              20, False, "KiB", f"{one}, worst round"),
        Check("peak RSS per worker at held-open streams", _largest(r.worker_rss_peak_mib for r in slow),
              120, False, "MiB", f"largest worker of {one} and {two}"),
    ]  # fmt: skip


def _largest(values: Iterable[float | None]) -> float | None:
    # The worst case for a cost, the best case for a rate.
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return max(kept) if kept else None


def paired_ratios(samples: list[Sample], bare: str = UVICORN_1W) -> dict[str, list[float]]:
    """uv-full / `bare` CPU per request of each pair of runs, per scenario: the k-th run of each in a
    round (bench/targets.run_order runs them back to back there)."""
    runs: dict[tuple[str, int, str], list[float]] = {}
    for s in samples:
        if s.target in (FULL, bare):
            runs.setdefault((s.scenario, s.round, s.target), []).append(s.cpu_ms_per_request)
    ratios: dict[str, list[float]] = {}
    for (scenario, round_, target), full in runs.items():
        if target != FULL:
            continue
        for f, b in zip(full, runs.get((scenario, round_, bare), []), strict=False):
            if b > 0 and not math.isnan(f) and not math.isnan(b):
                ratios.setdefault(scenario, []).append(f / b)
    return ratios


def full_ratios(
    found: list[Row], samples: list[Sample] | None = None, bare: str = UVICORN_1W
) -> dict[str, float]:
    """CPU per request of the full pipelines over the bare ones, per scenario both ran: the median of the
    paired runs' ratios where they ran in pairs (more than one each in a round), else the ratio of the
    medians."""
    cpu = {(r.scenario, r.target): r.cpu_ms_per_request for r in found}
    ratios = {
        r.scenario: r.cpu_ms_per_request / cpu[(r.scenario, bare)]
        for r in found
        if r.target == FULL and cpu.get((r.scenario, bare))
    }
    rounds = Counter(scenario for scenario, _ in {(s.scenario, s.round) for s in samples or ()})
    for scenario, paired in paired_ratios(samples or [], bare).items():
        if len(paired) > rounds[scenario]:
            ratios[scenario] = statistics.median(paired)
    return ratios


def full_check(found: list[Row], samples: list[Sample] | None = None, bare: str = UVICORN_1W) -> Check:
    """Stages cost what they must: uv-full / uv-1w CPU per request, worst of chat and voice (paced too)."""
    ratios = full_ratios(found, samples, bare)
    worst = _largest(v for name, v in ratios.items() if not name.startswith("embed"))
    return Check("CPU per request, all stages / bare", worst, FULL_CPU_RATIO, False, "x",
                 f"{FULL} / {bare}, worst of chat/voice c1/c8/c32 and paced, paired runs")  # fmt: skip


def full_spread(samples: list[Sample], bare: str = UVICORN_1W) -> list[str]:
    """The runs behind each ratio: `scenario: uv-full lo-hi / uv-1w lo-hi` (CPU ms per request), and the
    paired runs' ratios lo-hi."""
    paired = paired_ratios(samples, bare)
    runs: dict[tuple[str, str], list[float]] = {}
    for s in samples:
        if s.target in (FULL, bare) and not math.isnan(s.cpu_ms_per_request):
            runs.setdefault((s.scenario, s.target), []).append(s.cpu_ms_per_request)
    lines = []
    for (scenario, target), full in runs.items():
        base = runs.get((scenario, bare))
        if target == FULL and base:
            pairs = paired.get(scenario, [])
            ratios = f", pairs {min(pairs):.2f}-{max(pairs):.2f}x" if pairs else ""
            lines.append(
                f"{scenario} {FULL} {min(full):.3f}-{max(full):.3f} / {bare} {min(base):.3f}-{max(base):.3f}"
                f" ({len(full)} runs{ratios})"
            )
    return lines


def embeddings(found: list[Row]) -> list[str]:
    """Embeddings hit and miss side by side, per target: total p50/p99, req/s and CPU per request."""
    hits = {r.target: r for r in found if r.scenario.startswith("embed-hit")}
    misses = {r.target: r for r in found if r.scenario.startswith("embed-miss")}
    head = f"{'target':8} {'hit p50':>8} {'hit p99':>8} {'miss p50':>8} {'miss p99':>8}"
    lines = [f"{head} {'hit req/s':>9} {'miss req/s':>10} {'hit cpu':>8} {'miss cpu':>8}"]
    for target, hit in hits.items():
        miss = misses.get(target)
        if miss is None:
            continue
        lines.append(
            f"{target:8} {hit.total_p50_ms:8.3f} {hit.total_p99_ms:8.3f} {miss.total_p50_ms:8.3f}"
            f" {miss.total_p99_ms:8.3f} {hit.rps:9.0f} {miss.rps:10.0f}"
            f" {hit.cpu_ms_per_request:8.3f} {miss.cpu_ms_per_request:8.3f}"
        )
    return lines if len(lines) > 1 else []
