"""bench.instructions reads callgrind's own total; the run itself needs valgrind and minutes."""

from __future__ import annotations

import pytest

from bench.instructions import Counted, Ratio, events, misses_line, summary


def test_the_total_is_the_totals_line_else_the_summary() -> None:
    text = "# callgrind format\nversion: 1\nevents: Ir\nsummary: 775134136\n\nob=(6) libpython\n"
    assert summary(text) == 775134136
    assert summary(text + "totals: 807915188\n") == 807915188


def test_a_file_without_one_is_refused() -> None:
    with pytest.raises(ValueError, match="totals or summary"):
        summary("events: Ir\n")


def test_the_idle_workers_rate_is_taken_off_over_the_time_the_requests_took() -> None:
    # 1,000 requests in 40 s; idle, 2 M instructions a second (measured over 20 s).
    counted = Counted(requests=1000, total=500_000_000, seconds=40.0, idle=40_000_000, idle_seconds=20.0)

    assert counted.per_request == 500_000
    assert counted.less_idle == 420_000


def test_the_sections_ratio_is_checked_with_the_idle_work_taken_off() -> None:
    bare = Counted(requests=2000, total=870_000_000, seconds=13.0, idle=6_500_000, idle_seconds=13.0)
    full = Counted(requests=2000, total=1_380_000_000, seconds=20.0, idle=20_000_000, idle_seconds=20.0)
    ratio = Ratio(bare, full)
    text = "\n".join(ratio.lines())

    # (1,380 M - 20 M) / (870 M - 6.5 M) = 1.575; as counted 1.586.
    assert ratio.value == pytest.approx(1360 / 863.5)
    assert ratio.check().verdict == "PASS"
    assert "ratio 1.586 as counted, 1.575 less the idle work" in text
    assert ratio.to_json()["check"]["verdict"] == "PASS"  # type: ignore[index]


def test_each_event_is_read_with_its_name() -> None:
    text = (
        "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n"
        "summary: 100 40 20 9 8 7 3 2 1\n"
        "totals: 200 80 40 18 16 14 6 4 2\n"
    )
    assert events(text) == {
        "Ir": 200, "Dr": 80, "Dw": 40, "I1mr": 18, "D1mr": 16, "D1mw": 14, "ILmr": 6, "DLmr": 4, "DLmw": 2
    }  # fmt: skip
    assert events("events: Ir\nsummary: 775134136\n") == {"Ir": 775134136}
    with pytest.raises(ValueError, match="not a callgrind output file"):
        events("summary: 1\n")


def test_the_misses_are_a_requests() -> None:
    counts = {
        "Ir": 700_000,
        "I1mr": 20_000,
        "D1mr": 12_000,
        "D1mw": 4_000,
        "ILmr": 250,
        "DLmr": 600,
        "DLmw": 320,
    }
    # 1,000 requests: the counts are the requests' together.
    counted = Counted(1000, 700_000_000, 1.0, 0, 1.0, {name: count * 1000 for name, count in counts.items()})

    line = misses_line(counted)

    assert "first level, instructions 20,000, data 12,000 read / 4,000 write" in line
    assert "last level 1,170 (instructions 250, data 600 read / 320 write)" in line
