"""The one-shot GPU check: its comparison lines, and that it exits 0 on a machine without a GPU."""

from __future__ import annotations

import pytest

from citadel_proxy.system import gpu_check
from citadel_proxy.system.gpu import GpuProbe
from tests.system.fake_nvml import FakeNvml


def test_compare_puts_our_figures_beside_nvidia_smi_s() -> None:
    [gpu] = GpuProbe(FakeNvml()).sample().gpus
    lines = gpu_check.compare(gpu, ["NVIDIA H200", "37", "1030", "143771", "41", "120.00"])
    assert len(lines) == 6
    assert lines[0].endswith("same")
    assert "diff=+0.00 %" in lines[1]
    assert "diff=-6.00 MiB" in lines[2]
    assert "diff=+3.46 W" in lines[5]


def test_compare_without_nvidia_smi_row() -> None:
    [gpu] = GpuProbe(FakeNvml()).sample().gpus
    assert all(line.endswith("diff=n/a") for line in gpu_check.compare(gpu, None))


def test_main_exits_zero_and_prints_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu.py status: ")
