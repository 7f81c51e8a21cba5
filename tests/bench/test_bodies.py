"""The large-body memory check of `make bench` (bench/bodies.py): its bodies and its verdict."""

from __future__ import annotations

import json

from bench.bodies import BodyRun, body_of


def test_the_bench_bodies_and_their_verdict() -> None:
    body = body_of(4)
    assert len(body) == 4_000_000 and json.loads(body)["messages"][0]["role"] == "user"
    fits = BodyRun("uv-1w", 4, 4, 60.0, peak_growth_mib=4 * 25.0, after_growth_mib=2.0, statuses={200: 4})
    assert fits.verdict == "PASS"
    kept = BodyRun("uv-1w", 4, 1, 60.0, peak_growth_mib=20.0, after_growth_mib=30.0, statuses={200: 1})
    assert kept.verdict == "MISS"
