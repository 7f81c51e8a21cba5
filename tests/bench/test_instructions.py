"""bench.instructions reads callgrind's own total; the run itself needs valgrind and minutes."""

from __future__ import annotations

import pytest

from bench.instructions import summary


def test_the_total_is_the_totals_line_else_the_summary() -> None:
    text = "# callgrind format\nversion: 1\nevents: Ir\nsummary: 775134136\n\nob=(6) libpython\n"
    assert summary(text) == 775134136
    assert summary(text + "totals: 807915188\n") == 807915188


def test_a_file_without_one_is_refused() -> None:
    with pytest.raises(ValueError, match="totals or summary"):
        summary("events: Ir\n")
