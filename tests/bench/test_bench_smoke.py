"""Keeps `make bench` from rotting: the load generator against the bench's fake Ollama, and the report."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bench import report
from bench.loadgen import Job, LoadProcess, request_bytes, run_job
from bench.measure import Sample
from bench.nginx import nginx_conf
from bench.procs import UNLIMITED_PER_MINUTE, bare_pipelines, full_pipelines
from bench.scenarios import QUICK, Scenario, Target, all_scenarios, job_for
from bench.targets import FULL, FULL_RUNS, TWO_WORKERS, run_order

CHAT = b'{"model":"phi3:latest","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":8}'


@pytest.mark.parametrize("stream", [b"true", b"false"])
async def test_load_generator_counts_every_answer(fake_port: int, stream: bytes) -> None:
    body = CHAT + b',"stream":' + stream + b"}"
    result = await run_job(Job(fake_port, "/api/chat", body, concurrency=4, max_requests=20, max_seconds=5.0))

    assert (len(result.total), result.errors, result.statuses) == (20, 0, {200: 20})
    assert all(0 < first <= total for first, total in zip(result.ttft, result.total, strict=True))


async def test_load_process_runs_a_job_in_its_own_process(fake_port: int) -> None:
    load = LoadProcess()
    try:
        job = Job(fake_port, "/api/chat", CHAT + b"}", concurrency=2, max_requests=10, max_seconds=5.0)
        result = await asyncio.to_thread(load.run, job)
    finally:
        await asyncio.to_thread(load.close)

    assert len(result.total) == 10
    assert result.errors == 0


def test_report_adds_against_direct_and_checks_targets(tmp_path: Path) -> None:
    times = {"ttft_p50_ms": 0.2, "ttft_p99_ms": 0.5, "total_p50_ms": 0.2, "total_p99_ms": 0.5}
    memory = {"rss_idle_mib": 20.0, "rss_peak_mib": 20.0, "worker_rss_peak_mib": 20.0}
    direct = Sample(
        scenario="chat c1", target="direct", round=1, requests=100, errors=0, elapsed_s=1.0, rps=1000.0,
        cpu_ms_per_request=0.02, cpu_us_per_token=None, loadgen_cpu_ms_per_request=0.01,
        statuses={200: 100}, **times, **memory,
    )  # fmt: skip
    gateway = replace(direct, target="hc-1w", rps=500.0, ttft_p50_ms=0.7, cpu_ms_per_request=0.4)

    full = replace(gateway, target="uv-full", cpu_ms_per_request=1.0)

    rows = report.rows([direct, gateway, full], {})
    text = report.table(rows)
    checks = {c.goal: c.verdict for c in report.checks(rows)}

    assert rows[1].added_ttft_p50_ms == pytest.approx(0.5)
    assert rows[1].rps_ratio == pytest.approx(0.5)
    assert "hc-1w" in text
    assert checks["CPU per non-streaming chat"] == "PASS"
    assert checks["non-streaming chats/s, one worker"] == "MISS"
    assert report.full_ratios(rows, bare="hc-1w") == {"chat c1": pytest.approx(2.5)}
    assert report.full_check(rows, bare="hc-1w").verdict == "MISS"
    assert {c.verdict for c in report.checks(rows, report.UVICORN_1W, report.UVICORN_2W)} == {"N/A"}
    assert len(all_scenarios(QUICK)) > 10
    assert "proxy_buffering off" in nginx_conf(tmp_path, {8080: 11434})


def test_pipelines_bare_keep_cache_and_full_never_refuse(tmp_path: Path) -> None:
    yaml = YAML()
    embeddings = yaml.load(bare_pipelines(tmp_path) / "embeddings.yaml")
    full = yaml.load(full_pipelines(tmp_path) / "chat.yaml")
    limits = next(s["rate_limit"] for s in full["stages"] if isinstance(s, dict) and "rate_limit" in s)

    assert embeddings["stages"] == [{"cache": {"ttl": 3600, "prefix": "embeddings:"}}]
    assert limits["requests_per_minute"] == limits["tokens_per_minute"] == UNLIMITED_PER_MINUTE
    assert "audit" in [next(iter(s)) if isinstance(s, dict) else s for s in full["stages"]]


def test_targets_pick_their_scenarios_and_send_their_headers() -> None:
    scenarios = {s.name: s for s in all_scenarios(QUICK)}
    auth = b"Authorization: Bearer cit_x\r\n"
    target = Target("uv-full", True, None, 1, None, 1, auth, FULL)  # type: ignore[arg-type]
    two = Target("hc-2w", True, None, 1, None, 1, b"", TWO_WORKERS)  # type: ignore[arg-type]
    request = request_bytes(job_for(target, scenarios["embed-miss c8"], QUICK))

    assert [n for n, s in scenarios.items() if two.runs(s)] == [*TWO_WORKERS[:4], "slow x500"]
    assert target.runs(scenarios["chat c1"]) and not target.runs(scenarios["stream c1"])
    assert request.startswith(b"POST /api/embed HTTP/1.1\r\n")
    assert auth + b"\r\n{" in request
    assert Scenario("embed-hit c8", "embed-hit", 8).embeddings


def test_the_compared_pair_runs_back_to_back_and_its_ratio_is_taken_per_pair() -> None:
    scenarios = {s.name: s for s in all_scenarios(QUICK)}
    names = ("direct", "hc-1w", "uv-1w", "gr-1w", "uv-full")
    order = [Target(n, True, None, 1, None, 1, b"", FULL if n == "uv-full" else ("",)) for n in names]  # type: ignore[arg-type]
    runs = [t.name for t in run_order(order, scenarios["chat c8"])]
    pairs = ["uv-1w", "uv-full", "uv-full", "uv-1w", "uv-1w", "uv-full"][: 2 * FULL_RUNS]
    assert runs == ["direct", "hc-1w", *pairs, "gr-1w"]
    assert [t.name for t in run_order(order, scenarios["stream c1"])] == ["direct", "hc-1w", "uv-1w", "gr-1w"]

    # A machine that slows down through the round: each pair sees the same machine, the medians do not.
    def sample(target: str, cpu: float) -> Sample:
        return Sample(
            scenario="chat c8", target=target, round=1, requests=100, errors=0, elapsed_s=1.0, rps=1000.0,
            ttft_p50_ms=0.2, ttft_p99_ms=0.5, total_p50_ms=0.2, total_p99_ms=0.5, cpu_ms_per_request=cpu,
            cpu_us_per_token=None, rss_idle_mib=20.0, rss_peak_mib=20.0, worker_rss_peak_mib=20.0,
            loadgen_cpu_ms_per_request=0.01, statuses={200: 100},
        )  # fmt: skip

    samples = [sample("uv-1w", 0.1), sample("uv-full", 0.15), sample("uv-full", 0.32), sample("uv-1w", 0.2),
               sample("uv-1w", 0.4), sample("uv-full", 0.56)]  # fmt: skip
    rows = report.rows(samples, {})
    assert report.paired_ratios(samples)["chat c8"] == pytest.approx([1.5, 1.6, 1.4])
    assert report.full_ratios(rows, samples) == {"chat c8": pytest.approx(1.5)}
    assert report.full_ratios(rows) == {"chat c8": pytest.approx(1.6)}  # the medians' ratio, 0.32 / 0.2
    assert report.full_check(rows, samples).verdict == "PASS"
