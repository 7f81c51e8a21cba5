"""GpuProbe against a fake NVML (injected, never patched in) and against this machine's real one."""

from __future__ import annotations

import contextlib

from citadel_proxy.config.schema import Config
from citadel_proxy.system.gpu import GpuProbe, open_gpu_probe
from tests.system.fake_nvml import MIB, FakeGpu, FakeNvml, NVMLError, NVMLError_LibraryNotFound


def test_reads_every_field_in_nvidia_smi_units() -> None:
    nvml = FakeNvml()
    report = GpuProbe(nvml).sample()
    assert report.status == "ok"
    [gpu] = report.gpus
    assert gpu.index == 0
    assert gpu.name == "NVIDIA H200"  # bytes from older pynvml are decoded
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert (gpu.utilization_gpu_percent, gpu.utilization_memory_percent) == (37, 12)
    assert gpu.memory_total_bytes == 143771 * MIB
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.memory_free_mib) == (143771, 1024, 142746)
    assert gpu.temperature_c == 41
    assert gpu.power_draw_w == 123.46
    assert gpu.power_limit_w == 700.0
    assert gpu.fan_speed_percent == 30
    assert gpu.driver_version == "550.54.15"
    assert gpu.cuda_driver_version == "12.4"


def test_unsupported_fields_are_null_and_the_rest_still_read() -> None:
    passive = FakeGpu(unsupported={"nvmlDeviceGetFanSpeed", "nvmlDeviceGetPowerUsage"})
    report = GpuProbe(FakeNvml([FakeGpu(), passive])).sample()
    assert report.status == "ok"
    first, second = report.gpus
    assert (first.fan_speed_percent, first.power_draw_w) == (30, 123.46)
    assert (second.fan_speed_percent, second.power_draw_w) == (None, None)
    assert second.index == 1
    assert second.temperature_c == 41
    assert second.power_limit_w == 700.0


def test_memory_falls_back_to_v1_when_the_driver_lacks_v2() -> None:
    nvml = FakeNvml()
    nvml.memory_v2 = False
    [gpu] = GpuProbe(nvml).sample().gpus
    assert gpu.memory_used_mib == 1024


def test_a_lost_gpu_is_left_out_and_named_in_the_status() -> None:
    nvml = FakeNvml([FakeGpu(), FakeGpu()])
    nvml.lost = {0}
    report = GpuProbe(nvml).sample()
    assert [gpu.index for gpu in report.gpus] == [1]
    assert report.status == "GPU 0 unreadable: GPU is lost"


def test_no_gpu_is_an_empty_list_and_a_reason() -> None:
    report = GpuProbe(FakeNvml([])).sample()
    assert report.gpus == []
    assert report.status == "no NVIDIA GPU found"


def test_nvml_starts_once_and_stops_at_close() -> None:
    nvml = FakeNvml()
    probe = GpuProbe(nvml)
    assert nvml.inits == 0  # lazily, on the first read
    for _ in range(3):
        probe.sample()
    assert nvml.inits == 1
    probe.close()
    probe.close()
    assert nvml.shutdowns == 1


def test_missing_library_is_a_reason_retried_after_a_minute() -> None:
    now = [1000.0]
    nvml = FakeNvml(init_error=NVMLError_LibraryNotFound())
    probe = GpuProbe(nvml, clock=lambda: now[0])
    report = probe.sample()
    assert report.gpus == []
    assert report.status == "NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver installed)"
    now[0] += 30
    assert probe.sample().status == report.status
    assert nvml.inits == 1
    nvml.init_error = None
    now[0] += 31
    assert probe.sample().status == "ok"
    assert nvml.inits == 2
    probe.close()
    assert nvml.shutdowns == 1


def test_other_init_failures_carry_nvml_s_message() -> None:
    report = GpuProbe(FakeNvml(init_error=NVMLError("Driver Not Loaded"))).sample()
    assert (report.gpus, report.status) == ([], "NVML unavailable: Driver Not Loaded")


def test_close_without_a_start_does_nothing() -> None:
    nvml = FakeNvml()
    GpuProbe(nvml).close()
    assert nvml.shutdowns == 0


def test_this_machine_gives_a_list_or_a_reason_never_an_error() -> None:
    probe = GpuProbe()
    try:
        report = probe.sample()
    finally:
        probe.close()
    if report.status == "ok":
        assert report.gpus
    else:
        assert report.gpus == []
        assert report.status


async def test_open_gpu_probe_closes_with_the_stack() -> None:
    async with contextlib.AsyncExitStack() as stack:
        probe = await open_gpu_probe(Config(), stack)
        report = await probe.read()
        assert isinstance(report.status, str)
    assert probe._ready is False
