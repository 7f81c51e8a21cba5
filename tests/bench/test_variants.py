"""bench.variants: what a variant names, and how each is set against the direct run of its own round."""

from __future__ import annotations

import pytest

from bench.latency import DIRECT, Run, rows
from bench.variants import Variant, table


def test_a_variant_names_the_pipelines_a_stage_left_out_and_the_audit_writers_wait() -> None:
    assert Variant.parse("bare") == Variant("bare", full=False)
    assert Variant.parse("full") == Variant("full", full=True)
    assert Variant.parse("full-rate_limit") == Variant("full-rate_limit", full=True, without="rate_limit")
    assert Variant.parse("full@0.01") == Variant("full@0.01", full=True, linger_s=0.01)
    assert Variant.parse("full-metrics@0.5").without == "metrics"
    assert Variant.parse("full@0.01").name == "full_0_01"
    assert Variant.parse("bare+300") == Variant("bare+300", full=False, work_units=300)
    assert Variant.parse("full-audit@0.05+10") == Variant(
        "full-audit@0.05+10", full=True, without="audit", linger_s=0.05, work_units=10
    )


@pytest.mark.parametrize(
    "text", ["", "uv-full", "full-", "bare-audit", "bare@0.01", "full@soon", "bare+", "bare+1e3", "+5"]
)
def test_anything_else_is_refused_with_what_a_variant_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"bare, full, full-STAGE or full@SECONDS|in seconds|whole number"):
        Variant.parse(text)


def _run(target: str, round_: int, p50: float, p99: float, cpu: float = 0.0) -> Run:
    return Run("chat c64", target, round_, 1000, 0, p50, p99, p50, p99, cpu)


def test_each_variant_is_the_difference_from_direct_in_the_same_round() -> None:
    runs = [
        _run(DIRECT, 1, 60.0, 61.0),
        _run("full", 1, 61.0, 64.0, 25.0),
        _run("full@0.01", 1, 61.0, 62.5, 26.0),
        _run(DIRECT, 2, 60.5, 62.0),
        _run("full@0.01", 2, 61.0, 63.0, 27.0),
        _run("full", 2, 61.5, 66.0, 24.0),
    ]

    full, short = rows(runs)

    assert (full.rounds, full.added_ttft_p99_ms.median, full.added_ttft_p99_ms.low) == (2, 3.5, 3.0)
    assert (short.added_ttft_p99_ms.low, short.added_ttft_p99_ms.high) == (1.0, 1.5)
    assert short.gateway_cpu_percent.median == 26.5
    lines = table("chat c64", "own core", [full, short])
    assert lines[2].split()[:2] == ["full", "2"] and "+3.50 (+3.00..+4.00)" in lines[2]
