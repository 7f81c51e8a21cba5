"""Issue 17's bench sections: the shipped site rendered for the bench, TLS in the load generator, the sums."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest

from bench import front, tls_front, workers
from bench.fake_ollama import Answers, Connection, Settings
from bench.loadgen import Job, run_job
from bench.report import Check

CHAT = b'{"model":"phi3:latest","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":8}}'


def test_the_shipped_site_is_rendered_with_loopback_ports_and_the_bench_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    text = tls_front.render_site(tls_front.SITE.read_text(), 8443, 8080, 9000, cert, key, tmp_path)

    assert "listen 127.0.0.1:8443 ssl http2;" in text
    assert "server 127.0.0.1:9000;" in text
    assert f"ssl_certificate {cert};" in text and f"ssl_certificate_key {key};" in text
    assert "/etc/ssl" not in text and "/var/log" not in text and "listen [::]" not in text
    with pytest.raises(ValueError, match="no longer in"):
        tls_front.render_site("server {}", 1, 2, 3, cert, key, tmp_path)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_load_generator_speaks_tls_and_keeps_connections(tmp_path: Path) -> None:
    cert, key = tls_front.make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    answers, settings = Answers(), Settings(tokens=8)
    server = await loop.create_server(lambda: Connection(answers, settings), "127.0.0.1", 0, ssl=context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        job = Job(port, "/api/chat", CHAT, concurrency=2, max_requests=20, max_seconds=5.0, tls_ca=str(cert))
        result = await run_job(job)

    assert (len(result.total), result.errors, result.reconnects) == (20, 0, 0)


def test_sections_run_when_named_or_in_a_full_run() -> None:
    assert front.wanted("chat c1,workers", quick=False) == ["workers"]
    assert front.wanted(None, quick=True) == []
    assert front.wanted(None, quick=False) == ["workers", "tls", "instructions"]


def _sample(
    mode: str, target: str, rps: float, workers_cpu: list[float], round_: int = 1
) -> workers.WorkerSample:
    return workers.WorkerSample(
        mode=mode, target=target, round=round_, requests=int(rps * 2), errors=0, elapsed_s=2.0,
        total_p50_ms=5.0, worker_cpu_s=workers_cpu, worker_connections=[32] * len(workers_cpu),
        supervisor_cpu_s=0.0, loadgen_cpu_s=0.4, fake_cpu_s=0.2,
    )  # fmt: skip


def test_worker_scaling_is_projected_from_cpu_per_chat_and_the_busiest_share() -> None:
    result = workers.WorkersResult(
        [
            _sample(workers.FREE, workers.ONE, 5000, [2.0]),  # one core: 5000 chats per CPU-second
            _sample(workers.FREE, workers.TWO, 6000, [1.3, 1.3]),  # 4615 per CPU-second, evenly shared
        ]
    )
    summary = workers.summarise(result)
    verdicts = {check.goal: check for check in workers.checks(summary)}

    assert summary.raw_ratio == pytest.approx(1.2)
    assert summary.busiest_share == pytest.approx(0.5)
    assert summary.projected == pytest.approx((12000 / 2.6) / (10000 / 2.0) / 0.5)
    assert [c.verdict for c in verdicts.values()] == ["MISS", "PASS"]
    assert all(isinstance(c, Check) for c in verdicts.values())
    # One worker doing 3/4 of the work saturates its core first: the projection falls.
    skewed = workers.summarise(
        workers.WorkersResult(
            [
                _sample(workers.FREE, workers.ONE, 5000, [2.0]),
                _sample(workers.FREE, workers.TWO, 6000, [1.95, 0.65]),
            ]
        )
    )
    assert skewed.projected == pytest.approx(summary.projected * 0.5 / 0.75)


def _front(scenario: str, target: str, ttft: float, round_: int) -> tls_front.FrontSample:
    return tls_front.FrontSample(scenario, target, round_, 100, 0, 1000.0, ttft, ttft * 2, 0.05, 0.2, 0)


def test_tls_rows_add_against_direct_and_against_the_back_end_alone() -> None:
    samples = [
        _front("chat c1", target, ttft, round_)
        for round_, shift in ((1, 0.0), (2, 0.1))
        for target, ttft in (("direct", 0.1), ("uv-1w", 0.4), ("tls+uv-1w", 0.7 + shift))
    ]
    backends = {"direct": "direct", "uv-1w": "uv-1w", "tls+uv-1w": "uv-1w"}
    rows = {r.target: r for r in tls_front.rows(tls_front.FrontResult(samples, backends=backends))}

    assert rows["tls+uv-1w"].added_p50_ms == pytest.approx(0.65)
    assert rows["tls+uv-1w"].front_p50_ms == pytest.approx(0.35)
    assert rows["tls+uv-1w"].front_p50_spread == "+0.300..+0.400"
    assert rows["tls+uv-1w"].chain_cpu_ms == pytest.approx(0.25)
    assert rows["uv-1w"].front_p50_spread == "-"
    assert "tls+uv-1w" in "\n".join(tls_front.lines(list(rows.values()), None))
