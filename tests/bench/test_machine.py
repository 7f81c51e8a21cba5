"""bench.machine: the processor and its caches, as the bench's header and JSON give them."""

from __future__ import annotations

from pathlib import Path

from bench.machine import Cache, Machine, caches, cpu_model

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse2 hypervisor avx2

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme sse2 hypervisor avx2
"""


def test_the_first_processor_names_the_model_and_its_flags_say_virtual() -> None:
    assert cpu_model(_CPUINFO) == ("Intel(R) Xeon(R) Processor", True)
    assert cpu_model(_CPUINFO.replace(" hypervisor", "")) == ("Intel(R) Xeon(R) Processor", False)
    assert cpu_model("processor\t: 0\n") == ("unknown", False)


def _index(folder: Path, name: str, level: str, kind: str, size: str, shared: str) -> None:
    index = folder / name
    index.mkdir()
    for field, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (index / field).write_text(value + "\n")


def test_caches_are_read_lowest_level_first_and_unreadable_ones_skipped(tmp_path: Path) -> None:
    _index(tmp_path, "index3", "3", "Unified", "516096K", "0-1")
    _index(tmp_path, "index0", "1", "Data", "48K", "0")
    _index(tmp_path, "index1", "1", "Instruction", "64K", "0")
    _index(tmp_path, "index2", "2", "Unified", "2048K", "0")
    (tmp_path / "index4").mkdir()  # no files: skipped
    found = caches(tmp_path)
    assert [cache.name for cache in found] == ["L1d", "L1i", "L2", "L3"]
    assert found[-1] == Cache(3, "Unified", "516096K", "0-1")
    assert caches(tmp_path / "missing") == ()


def test_the_line_names_the_model_and_a_shared_cache() -> None:
    machine = Machine(
        2,
        "AMD EPYC",
        True,
        (
            Cache(1, "Data", "32K", "0"),
            Cache(2, "Unified", "1024K", "0"),
            Cache(3, "Unified", "32768K", "0-1"),
        ),
        "3.11.7",
        "Linux",
    )
    assert (
        machine.line()
        == "2 CPUs, AMD EPYC (virtual; L1d 32K, L2 1024K, L3 32768K shared by 0-1), Python 3.11.7"
    )
    assert machine.to_json()["caches"] == {
        "L1d": {"size": "32K", "shared_by": "0"},
        "L2": {"size": "1024K", "shared_by": "0"},
        "L3": {"size": "32768K", "shared_by": "0-1"},
    }
    bare = Machine(1, "unknown", False, (), "3.11.7", "Linux")
    assert bare.line() == "1 CPUs, unknown, Python 3.11.7"
