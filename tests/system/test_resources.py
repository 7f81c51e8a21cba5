"""The resources snapshot: its shape here, the CPU sampler's deltas, and that it leaves the loop free."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import namedtuple

import psutil

from citadel_proxy.config.schema import Config
from citadel_proxy.system.gpu import GpuInfo, GpuProbe, GpuReport
from citadel_proxy.system.resources import (
    Resources,
    ResourceSampler,
    _busy_percent,
    collect_resources,
    open_resource_sampler,
)
from tests.system.fake_nvml import FakeNvml

Times = namedtuple("Times", "user nice system idle iowait guest guest_nice")


async def test_shape_on_this_machine() -> None:
    async with contextlib.AsyncExitStack() as stack:
        sampler = await open_resource_sampler(Config(), stack)
    probe = GpuProbe()
    try:
        report = await collect_resources(sampler, probe)
    finally:
        probe.close()
    assert isinstance(report, Resources)
    assert 0.0 <= report.cpu_percent <= 100.0
    assert report.cpu_percent == report.cpu.percent
    assert len(report.cpu.per_core_percent) == report.cpu.logical_cores == psutil.cpu_count()
    assert all(0.0 <= p <= 100.0 for p in report.cpu.per_core_percent)
    assert report.cpu.load_average.one_minute >= 0
    assert report.memory.total_bytes >= report.memory.available_bytes > 0
    assert report.swap.total_bytes >= report.swap.used_bytes >= 0
    assert report.disks, "at least the root filesystem"
    assert all(d.fstype not in ("proc", "sysfs", "tmpfs", "cgroup") for d in report.disks)
    assert len({d.mountpoint for d in report.disks}) == len(report.disks)
    if report.disk_root is not None:
        assert report.disk_root.mountpoint == "/"
    names = [nic.interface for nic in report.network.interfaces]
    assert "lo" in names
    assert report.network.total.bytes_received == sum(n.bytes_received for n in report.network.interfaces)
    assert report.process.pid == os.getpid()
    assert report.process.rss_bytes > 0
    assert report.process.threads >= 1
    assert report.process.open_fds is not None and report.process.open_fds > 0
    assert report.uptime_s > 0
    # No NVIDIA driver here; on a GPU machine the list is filled and the status is "ok".
    if report.gpu_status == "ok":
        assert report.gpus
    else:
        assert report.gpus == []
        assert report.gpu_status.startswith("NVML unavailable")


async def test_gpus_come_from_the_probe() -> None:
    sampler = await asyncio.to_thread(ResourceSampler)
    report = await collect_resources(sampler, GpuProbe(FakeNvml()))
    assert report.gpu_status == "ok"
    assert [gpu.name for gpu in report.gpus] == ["NVIDIA H200"]


def test_busy_percent_is_the_share_of_non_idle_time() -> None:
    before = Times(user=100, nice=0, system=50, idle=800, iowait=50, guest=10, guest_nice=0)
    # +60 user (10 of it guest, already inside user), +20 system, +100 idle, +20 iowait
    after = Times(user=160, nice=0, system=70, idle=900, iowait=70, guest=20, guest_nice=0)
    assert _busy_percent(before, after) == 40.0
    assert _busy_percent(after, after) == 0.0


def test_sampler_repeats_its_figures_within_the_interval() -> None:
    now = [100.0]
    sampler = ResourceSampler(min_interval_s=0.5, clock=lambda: now[0])
    first = sampler.cpu()
    assert sampler.cpu() is first
    now[0] += 0.4
    assert sampler.cpu() is first
    now[0] += 0.2
    second = sampler.cpu()
    assert second is not first
    assert len(second.per_core) == psutil.cpu_count()


def test_first_reading_covers_the_time_since_priming() -> None:
    sampler = ResourceSampler(min_interval_s=0.0)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # keep this core busy so the delta cannot be all idle
        pass
    reading = sampler.cpu()
    assert reading.total > 0.0
    assert reading.process > 0.0


class SlowSampler(ResourceSampler):
    def snapshot(self, gpus: list[GpuInfo], gpu_status: str) -> Resources:
        self.thread = threading.get_ident()
        time.sleep(0.3)  # a blocking call, as a slow /proc or statvfs would be
        return super().snapshot(gpus, gpu_status)


class SlowProbe(GpuProbe):
    def sample(self) -> GpuReport:
        self.thread = threading.get_ident()
        time.sleep(0.3)
        return super().sample()


async def test_collect_resources_leaves_the_event_loop_free() -> None:
    sampler = await asyncio.to_thread(SlowSampler)
    probe = SlowProbe(FakeNvml())
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        report = await collect_resources(sampler, probe)
    finally:
        ticker.cancel()
    assert report.gpus
    loop_thread = threading.get_ident()
    assert sampler.thread != loop_thread
    assert probe.thread != loop_thread
    # 0.6 s of blocking work: a blocked loop would not tick at all.
    assert ticks >= 10
