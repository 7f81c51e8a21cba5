"""bench.stage_cpu: per-request CPU of each variant over the rounds, and what each stage left out saves."""

from __future__ import annotations

import pytest

from bench.stage_cpu import Run, rows, table


def _run(variant: str, round_: int, user_s: float, system_s: float, involuntary: int = 0) -> Run:
    return Run(variant, round_, 10_000, 0, 2.0, user_s, system_s, involuntary)


def test_each_variant_is_its_workers_cpu_a_request_over_the_rounds() -> None:
    runs = [
        _run("full", 1, 1.4, 0.4, 200),
        _run("full-audit", 1, 1.0, 0.3),
        _run("bare", 1, 0.7, 0.3),
        _run("bare", 2, 0.75, 0.25),
        _run("full-audit", 2, 1.05, 0.35),
        _run("full", 2, 1.5, 0.4, 100),
    ]

    full, audit, bare = rows(runs)

    assert [row.variant for row in (full, audit, bare)] == ["full", "full-audit", "bare"]
    assert full.rounds == 2
    assert (full.cpu_us.median, full.cpu_us.low, full.cpu_us.high) == pytest.approx((185.0, 180.0, 190.0))
    assert (full.user_us.median, full.system_us.median) == pytest.approx((145.0, 40.0))
    assert (full.involuntary.median, full.per_s.median) == pytest.approx((0.015, 5000.0))
    assert bare.cpu_us.median == pytest.approx(100.0)


def test_the_table_says_what_each_stage_costs_and_the_ratio() -> None:
    runs = [_run("full", 1, 1.4, 0.4), _run("full-audit", 1, 1.0, 0.3), _run("bare", 1, 0.7, 0.3)]

    lines = table(32, "own core", rows(runs))

    assert lines[2].split()[:3] == ["full", "1", "180.0"]
    assert "  audit costs 50.0 us a chat (full - full-audit)" in lines
    assert lines[-1] == "  full / bare: 1.80x"


def test_without_full_there_is_nothing_to_subtract() -> None:
    lines = table(8, "shared", rows([_run("bare", 1, 0.7, 0.3), _run("full-audit", 1, 1.0, 0.3)]))
    assert not any("costs" in line or "/ bare" in line for line in lines)


def test_the_table_says_what_known_work_costs_beside_its_base() -> None:
    runs = [_run("bare", 1, 0.7, 0.3), _run("bare+100", 1, 0.9, 0.3), _run("full+5", 1, 1.5, 0.4)]

    lines = table(32, "own core", rows(runs))

    assert "  100 units of work cost 20.0 us a chat (bare+100 - bare)" in lines
    assert not any("full+5 - full" in line for line in lines)  # its base was not measured
