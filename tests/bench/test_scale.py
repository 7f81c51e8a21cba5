"""Issue 17's bench scenarios (bench/latency.py, bench/open_streams.py): the timed fake, the generator's
ramp, stagger and token counts, and the figures and verdicts they report."""

from __future__ import annotations

import asyncio
import json
import resource
from dataclasses import replace

import pytest

from bench import latency, open_streams
from bench.cpus import OWN_CORE, SHARED
from bench.loadgen import Job, LoadProcess, run_job
from bench.procs import TIMED_MODELS
from bench.scale import Spread, raise_nofile, wanted

DONE_FALSE = b'"done":false'


def chat(model: str, tokens: int, stream: bool = True) -> bytes:
    body = {"model": model, "messages": [], "stream": stream, "options": {"num_predict": tokens}}
    return json.dumps(body).encode()


async def test_a_timed_model_sets_the_first_token_and_the_gap(fake_port: int) -> None:
    job = Job(fake_port, "/api/chat", chat("timed-40-10:latest", 5), 2, 4, 5.0, count=DONE_FALSE)
    result = await run_job(job)

    assert result.tokens == [5, 5, 5, 5]
    # Lower bounds only, with a margin for the timer's granularity: a busy machine only makes them later.
    assert all(first > 0.035 for first in result.ttft)
    assert all(total - first > 0.035 for first, total in zip(result.ttft, result.total, strict=True))


async def test_a_timed_model_answers_whole_after_first_plus_gaps(fake_port: int) -> None:
    job = Job(fake_port, "/api/chat", chat("timed-30-5", 4, stream=False), 1, 2, 5.0)
    result = await run_job(job)

    assert len(result.total) == 2 and all(total > 0.045 for total in result.total)  # 30 ms + 4 x 5 ms


async def test_a_ramp_opens_one_stream_per_connection_and_counts_their_tokens(fake_port: int) -> None:
    job = Job(
        fake_port, "/api/chat", chat("timed-20-20", 3), 40, 40, 5.0, one_per_connection=True,
        count=DONE_FALSE, ramp_per_s=400.0,
    )  # fmt: skip
    result = await run_job(job)

    assert (len(result.total), result.errors, result.tokens) == (40, 0, [3] * 40)
    assert result.ramp_s > 0.09  # 40 connections at 400 a second: the last one at 97.5 ms


async def test_stagger_spreads_first_requests_and_leaves_them_uncounted(fake_port: int) -> None:
    job = Job(fake_port, "/api/chat", chat("timed-50-0", 1, stream=False), 4, 10_000, 0.2, stagger_s=0.1)
    result = await run_job(job)

    # Counted: what was sent in the 0.2 s after the 0.1 s stagger, at most 5 answers a connection.
    assert result.errors == 0
    assert 4 <= len(result.total) <= 4 * 5
    assert result.elapsed_s >= 0.3


def test_the_scenario_names_select_issue_17_and_leave_the_others() -> None:
    assert wanted(None) == (["latency", "streams10k"], None)
    assert wanted("latency") == (["latency"], "")
    assert wanted("chat,streams10k") == (["streams10k"], "chat")
    assert wanted("chat c1,bodies") == ([], "chat c1,bodies")


def test_raising_the_file_limit_to_what_is_there_needs_nothing() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_nofile(min(soft, 64)) is None


def test_the_scenarios_models_are_configured_on_the_gateways() -> None:
    assert {kind.model for kind in latency.KINDS} <= set(TIMED_MODELS)
    assert {open_streams.MODEL, open_streams.PROBE_MODEL} <= set(TIMED_MODELS)


def _run(
    cell: str, target: str, round_: int, ttft_p99: float, answers: int = 100, placement: str = SHARED
) -> latency.Run:
    return latency.Run(cell, target, round_, answers, 0, 60.0, ttft_p99, 61.0, 62.0, 5.0, placement)


def test_latency_adds_against_direct_per_round_and_checks_the_targets() -> None:
    runs = [
        _run("chat c1", "direct", 1, 61.0), _run("chat c1", "uv-full", 1, 62.0, answers=80),
        _run("chat c1", "direct", 2, 61.0), _run("chat c1", "uv-full", 2, 64.0),
        _run("chat c1", "direct", 3, 61.0), _run("chat c1", "uv-full", 3, 61.5),
        _run("voice c256", "direct", 1, 55.0), _run("voice c256", "uv-full", 1, 70.0),
    ]  # fmt: skip
    rows = {row.cell: row for row in latency.rows(runs)}
    verdicts = [check.verdict for check in latency.checks(list(rows.values()))]

    assert rows["chat c1"].added_ttft_p99_ms == Spread(1.0, 0.5, 3.0)
    assert rows["chat c1"].answers_per_round == 80
    assert rows["voice c256"].added_ttft_p99_ms.median == pytest.approx(15.0)
    assert verdicts == ["PASS", "MISS"]
    assert "+1.00 (+0.50..+3.00)" in "\n".join(latency.table(list(rows.values())))


def test_latency_keeps_each_placement_to_its_own_direct_runs_and_checks() -> None:
    runs = [
        _run("chat c64", "direct", 1, 61.0), _run("chat c64", "uv-full", 1, 71.0),
        _run("chat c64", "direct", 1, 62.0, placement=OWN_CORE),
        _run("chat c64", "uv-full", 1, 63.0, placement=OWN_CORE),
    ]  # fmt: skip
    found = latency.rows(runs)
    listed = latency.checks(found)

    assert [(r.placement, r.added_ttft_p99_ms.median) for r in found] == [(SHARED, 10.0), (OWN_CORE, 1.0)]
    assert [(c.goal, c.verdict) for c in listed] == [
        ("added TTFT p99, c1 to c64", "MISS"),
        ("added TTFT p99, c256", "N/A"),
        (f"added TTFT p99, c1 to c64, {OWN_CORE}", "PASS"),
        (f"added TTFT p99, c256, {OWN_CORE}", "N/A"),
    ]
    assert listed[0].where.startswith("uv-full, worst cell chat c64")
    # The bare gateway measured instead (--latency-target uv-1w): its lines say so.
    bare = latency.rows([replace(r, target="uv-1w") if r.target == "uv-full" else r for r in runs])
    assert latency.checks(bare, "uv-1w")[0].where.startswith("uv-1w, worst cell chat c64")


def test_latency_checks_the_floor_beside_the_gateway_apart() -> None:
    # uv-1w runs beside uv-full as its floor: its own lines, which never decide uv-full's.
    runs = [
        _run("chat c64", "direct", 1, 61.0), _run("chat c64", "uv-full", 1, 64.0),
        _run("chat c64", "uv-1w", 1, 62.5), _run("chat c256", "direct", 1, 62.0),
        _run("chat c256", "uv-full", 1, 90.0), _run("chat c256", "uv-1w", 1, 80.0),
    ]  # fmt: skip
    found = latency.rows(runs)
    listed = latency.checks(found)

    assert [(r.cell, r.target) for r in found] == [
        ("chat c64", "uv-full"), ("chat c256", "uv-full"), ("chat c64", "uv-1w"), ("chat c256", "uv-1w"),
    ]  # fmt: skip
    assert [(c.goal, c.value, c.verdict) for c in listed] == [
        ("added TTFT p99, c1 to c64", 3.0, "MISS"),
        ("added TTFT p99, c256", 28.0, "MISS"),
        ("added TTFT p99, c1 to c64, uv-1w", 1.5, "PASS"),
        ("added TTFT p99, c256, uv-1w", 18.0, "MISS"),
    ]
    assert listed[2].where == "uv-1w, worst cell chat c64, median of rounds (uv-1w: no stage, the floor)"
    # Measured alone (--latency-target uv-1w), the bare gateway has no floor beside it.
    assert len(latency.checks(found, "uv-1w")) == 2
    assert "uv-1w" in "\n".join(latency.table(found))


def test_latency_cells_run_long_enough_for_their_samples_within_bounds() -> None:
    chat, voice = latency.KINDS
    plan = latency.FULL_PLAN

    assert plan.seconds(chat, 1) == pytest.approx(min(plan.most_s, 100 * 0.060))
    assert plan.seconds(voice, 1) == plan.most_s
    assert plan.seconds(chat, 256) == plan.least_s


def _hold(target: str, complete: int, rss: float, gateway_p99: float) -> open_streams.Hold:
    return open_streams.Hold(
        target=target, round=1, streams=100, tokens_each=25, answered=complete, errors=0,
        tokens=complete * 25, complete=complete, ramp_s=0.1, open_peak=100, probe_from_s=1.0, probe_s=5.0,
        loadgen_cpu_percent=5.0, worker_rss_idle_mib=75.0, worker_rss_peak_mib=rss, worker_fds_peak=220,
        worker_cpu_s=1.0, probe_gateway=300, probe_direct=300, probe_errors=0,
        probe_gateway_ttft_p50_ms=6.0, probe_gateway_ttft_p99_ms=gateway_p99,
        probe_direct_ttft_p50_ms=5.5, probe_direct_ttft_p99_ms=7.0,
    )  # fmt: skip


def test_open_streams_verdicts_per_target() -> None:
    holds = [_hold("uv-1w", 100, 120.0, 9.0), _hold("uv-full", 99, 260.0, 20.0)]
    verdicts = [check.verdict for check in open_streams.checks(holds, 100)]

    assert verdicts == ["PASS", "PASS", "PASS", "MISS", "MISS", "MISS"]
    assert holds[0].delivered and not holds[1].delivered
    assert "uv-full" in "\n".join(open_streams.table(holds))


async def test_the_load_process_counts_the_answers_open_while_a_job_runs(fake_port: int) -> None:
    load = LoadProcess(count_open=True)
    job = Job(
        fake_port, "/api/chat", chat("timed-10-300", 2), 5, 5, 5.0, one_per_connection=True,
        count=DONE_FALSE, ramp_per_s=1000.0,
    )  # fmt: skip
    try:
        load.submit(job)
        seen = 0
        while not await asyncio.to_thread(load.poll, 0.01):
            seen = max(seen, load.open_answers)
        result = load.result()
    finally:
        await asyncio.to_thread(load.close)

    assert (seen, result.tokens) == (5, [2] * 5)
    assert load.open_answers == 0
