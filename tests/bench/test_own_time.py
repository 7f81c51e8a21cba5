"""bench.own_time and bench.profile.record: py-spy's own time per function, a chat, variant against
variant (`bench.stage_cpu --py-spy`)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from bench.own_time import Profiled, table
from bench.profile import Entry, record
from bench.stage_cpu import main


def test_a_functions_share_of_the_samples_is_its_share_of_the_workers_cpu() -> None:
    entries = [Entry("a (m.py)", 50.0, 80.0), Entry("b (m.py)", 25.0, 25.0)]
    profiled = Profiled.of("full", entries, 400, cpu_us=120.0)
    assert profiled.own_us == {"a (m.py)": pytest.approx(60.0), "b (m.py)": pytest.approx(30.0)}
    assert (profiled.variant, profiled.samples, profiled.cpu_us) == ("full", 400, 120.0)


def test_the_table_leads_with_what_differs_most_and_sums_the_rest() -> None:
    full = Profiled(
        "full", 130.0, 7000, {"audit (a.py)": 3.0, "loop (r.py)": 7.0, "send (s.py)": 5.0, "x": 1.0}
    )
    bare = Profiled(
        "bare", 75.0, 6500, {"loop (r.py)": 4.5, "send (s.py)": 5.5, "front (f.py)": 4.0, "x": 0.5}
    )

    lines = table([full, bare], count=3)

    assert lines[0].endswith("full - bare first")
    assert lines[1].split() == ["diff", "full", "bare", "function"]
    functions = [line.split(maxsplit=3)[3] for line in lines[2:5]]
    # -4.0 (front, only in bare) before +3.0 (audit) before +2.5 (the loop); send's -0.5 is left out.
    assert functions == ["front (f.py)", "audit (a.py)", "loop (r.py)"]
    assert lines[2].split()[:3] == ["-4.00", "0.00", "4.00"]
    assert lines[5].split()[:3] == ["+0.00", "6.00", "6.00"]  # send and x, in the rest
    assert lines[5].endswith("(every other function)")
    assert lines[6].split()[:3] == ["+55.00", "130.00", "75.00"]
    assert lines[7] == "samples: full 7000, bare 6500"


def _fake_py_spy(folder: Path) -> Path:
    """A py-spy that writes two sampled stacks to its --output and its arguments beside them."""
    script = folder / "py-spy"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "argv = sys.argv[1:]\n"
        "out = argv[argv.index('--output') + 1]\n"
        "open(out + '.argv', 'w').write(' '.join(argv))\n"
        "open(out, 'w').write('main (m.py);work (m.py) 3\\nmain (m.py) 1\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_record_samples_while_the_load_runs_and_returns_what_it_returned(tmp_path: Path) -> None:
    out = tmp_path / "stacks" / "full.txt"

    entries, samples, loaded = record(
        str(_fake_py_spy(tmp_path)), 4242, 3.0, out, lambda: "the load", rate=1000
    )

    assert loaded == "the load"
    assert samples == 4
    assert [(e.function, e.own_pct) for e in entries] == [("work (m.py)", 75.0), ("main (m.py)", 25.0)]
    argv = (out.parent / "full.txt.argv").read_text().split()
    assert argv[:5] == ["record", "--pid", "4242", "--duration", "3"]
    assert argv[argv.index("--rate") + 1] == "1000"


def test_record_without_a_rate_leaves_py_spys_own(tmp_path: Path) -> None:
    out = tmp_path / "bare.txt"
    record(str(_fake_py_spy(tmp_path)), 1, 1.0, out, lambda: None)
    assert "--rate" not in (tmp_path / "bare.txt.argv").read_text().split()


@pytest.mark.parametrize(("given", "said"), [("0", "at least a second"), ("0.5", "invalid int value")])
def test_stage_cpu_samples_whole_seconds_only(
    given: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--py-spy", given, "full", "bare"])
    assert said in capsys.readouterr().err
