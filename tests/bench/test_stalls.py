"""bench.stalls and its in-gateway probe: what a long callback and a collection leave in the record, and how
the report groups them (no timings asserted: the long callback burns a known amount of CPU)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.stall_probe import Recorder
from bench.stalls import report, source_of


def burn(cpu_s: float) -> None:
    until = time.thread_time() + cpu_s
    while time.thread_time() < until:
        pass


def test_a_callback_past_the_threshold_is_recorded_with_its_cpu(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "record.json"), threshold_s=0.0005)
    loop = asyncio.new_event_loop()
    try:
        handle = asyncio.Handle(burn, (0.003,), loop)
        recorder.run_handle(handle, asyncio.Handle._run)
    finally:
        loop.close()

    [slow] = recorder.slow
    assert slow["cpu_ms"] >= 3.0 and slow["ms"] > 0  # (wall and thread clocks tick apart: no order)
    assert slow["what"].startswith("burn (") and "test_stalls.py" in slow["what"]
    assert recorder.callbacks == 1


def test_a_collection_is_recorded_with_its_generation(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "record.json"), threshold_s=0.0005)
    recorder.on_gc("start", {"generation": 2, "collected": 0, "uncollectable": 0})
    recorder.on_gc("stop", {"generation": 2, "collected": 7, "uncollectable": 0})

    [collection] = recorder.collections
    assert (collection["gen"], collection["collected"]) == (2, 7)


def test_the_report_counts_own_stalls_apart_from_descheduled_ones() -> None:
    ours = "citadel_proxy/audit/store.py:150 insert"
    data = {
        "pid": 1, "callbacks": 10, "busy_s": 0.1, "uptime_s": 2.0, "threshold_ms": 0.5,
        "gc_threshold": [20000, 20, 20], "gc_frozen": 5,
        "slow": [
            {"at_s": 1.0, "ms": 2.0, "cpu_ms": 1.5, "what": "task AuditSink._write_loop now at x:1",
             "samples": [[ours, "lib/python3.11/asyncio/events.py:80 _run"]]},
            {"at_s": 1.1, "ms": 3.0, "cpu_ms": 0.1, "what": "task RequestResponseCycle.run_asgi",
             "samples": []},
        ],
        "collections": [{"at_s": 1.2, "gen": 0, "ms": 4.0, "cpu_ms": 3.0, "collected": 10}],
    }  # fmt: skip
    lines = report(data, [("chat c1", 0.5, 1.5, 20)])

    row = next(line for line in lines if line.startswith("chat c1"))
    assert row.split()[2:7] == ["20", "2", "1", "1.50", "1.5"]  # answers, slow, own, own max, own sum
    assert "0 1 (4.00/3.00)" in row
    assert any("task AuditSink._write_loop | " + ours in line for line in lines)
    assert not any("RequestResponseCycle" in line for line in lines)  # descheduled: not the gateway's
    assert source_of(data["slow"][1]) == "task RequestResponseCycle.run_asgi | (not sampled)"  # type: ignore[index]
