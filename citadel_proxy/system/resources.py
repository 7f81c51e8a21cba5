"""A snapshot of the host: CPU, load, memory, swap, disks, network, the gateway's own process and GPUs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import psutil

from citadel_proxy.config.schema import Config
from citadel_proxy.system.gpu import GpuInfo, GpuProbe

# Kernel and memory-backed filesystems: not disks (tmpfs is RAM, already counted under memory).
_PSEUDO_FS = frozenset(
    "autofs binfmt_misc bpf cgroup cgroup2 configfs debugfs devpts devtmpfs efivarfs fusectl hugetlbfs "  # noqa: SIM905
    "mqueue nsfs proc pstore ramfs rpc_pipefs securityfs selinuxfs squashfs sysfs tmpfs tracefs".split()
)
# statvfs on a dead server blocks its thread for minutes; these are listed as skipped, not probed.
_NETWORK_FS = frozenset("9p afs ceph cifs fuse.sshfs glusterfs lustre nfs nfs4 smb3 smbfs sshfs".split())  # noqa: SIM905


class LoadAverage(msgspec.Struct, frozen=True, kw_only=True):
    one_minute: float
    five_minutes: float
    fifteen_minutes: float


class Cpu(msgspec.Struct, frozen=True, kw_only=True):
    percent: float
    per_core_percent: list[float]
    logical_cores: int | None
    physical_cores: int | None
    load_average: LoadAverage


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    total_bytes: int
    available_bytes: int
    used_bytes: int
    percent: float


class Swap(msgspec.Struct, frozen=True, kw_only=True):
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


class Disk(msgspec.Struct, frozen=True, kw_only=True):
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float

    @classmethod
    def of(cls, mountpoint: str, device: str, fstype: str, usage: Any) -> Disk:
        """From psutil's disk_usage() of that mount."""
        return cls(
            mountpoint=mountpoint,
            device=device,
            fstype=fstype,
            total_bytes=usage.total,
            used_bytes=usage.used,
            free_bytes=usage.free,
            percent=usage.percent,
        )


class SkippedMount(msgspec.Struct, frozen=True, kw_only=True):
    mountpoint: str
    fstype: str
    reason: str


class NetworkCounters(msgspec.Struct, frozen=True, kw_only=True):
    interface: str
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    errors_in: int
    errors_out: int
    drops_in: int
    drops_out: int


class Network(msgspec.Struct, frozen=True, kw_only=True):
    total: NetworkCounters
    interfaces: list[NetworkCounters]


class ProcessInfo(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    rss_bytes: int
    vms_bytes: int
    # Percent of one core, as top shows it: a busy multi-threaded process can pass 100.
    cpu_percent: float
    threads: int
    open_fds: int | None
    uptime_s: float


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: float
    uptime_s: float
    # The specification's scripts read `.cpu_percent`, `.memory.percent` and `.disk_root.percent`.
    cpu_percent: float
    cpu: Cpu
    memory: Memory
    swap: Swap
    disk_root: Disk | None
    disks: list[Disk]
    disks_skipped: list[SkippedMount]
    network: Network
    process: ProcessInfo
    gpus: list[GpuInfo]
    gpu_status: str


class _CpuReading(NamedTuple):
    total: float
    per_core: list[float]
    process: float


class ResourceSampler:
    """Keeps the previous CPU sample, so each percentage covers the time since the last reading.

    psutil's `cpu_percent(interval=None)` keeps that state in module globals shared with every other
    caller, and answers 0.0 the first time; the sampler keeps its own, primed when it is built. Asked
    again within `min_interval_s` it repeats its last figures: a delta of a few ms is only noise.
    Blocking (reads /proc): build it and call `snapshot` in a worker thread.
    """

    def __init__(self, *, min_interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._total = psutil.cpu_times()
        self._cores = psutil.cpu_times(percpu=True)
        self._at = clock()
        self._last: _CpuReading | None = None

    def cpu(self) -> _CpuReading:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._at < self._min_interval_s:
                return self._last
            total, cores = psutil.cpu_times(), psutil.cpu_times(percpu=True)
            # A CPU taken on- or offline changes the list; that one sample has no per-core figures.
            per_core = [_busy_percent(a, b) for a, b in zip(self._cores, cores, strict=False)]
            self._last = _CpuReading(
                total=_busy_percent(self._total, total),
                per_core=per_core if len(cores) == len(self._cores) else [],
                process=round(self._process.cpu_percent(None), 1),
            )
            self._total, self._cores, self._at = total, cores, now
            return self._last

    def snapshot(self, gpus: list[GpuInfo], gpu_status: str) -> Resources:
        reading = self.cpu()
        disks, skipped = _disks()
        return Resources(
            timestamp=round(time.time(), 3),
            uptime_s=round(time.time() - psutil.boot_time(), 1),
            cpu_percent=reading.total,
            cpu=_cpu(reading),
            memory=_memory(),
            swap=_swap(),
            disk_root=next((disk for disk in disks if disk.mountpoint == "/"), None),
            disks=disks,
            disks_skipped=skipped,
            network=_network(),
            process=self._process_info(reading.process),
            gpus=gpus,
            gpu_status=gpu_status,
        )

    def _process_info(self, cpu_percent: float) -> ProcessInfo:
        process = self._process
        with process.oneshot():
            memory = process.memory_info()
            return ProcessInfo(
                pid=process.pid,
                rss_bytes=memory.rss,
                vms_bytes=memory.vms,
                cpu_percent=cpu_percent,
                threads=process.num_threads(),
                open_fds=process.num_fds() if hasattr(process, "num_fds") else None,
                uptime_s=round(time.time() - process.create_time(), 1),
            )


async def collect_resources(sampler: ResourceSampler, gpu_probe: GpuProbe) -> Resources:
    """Every psutil and NVML call runs in a worker thread, never on the event loop."""
    gpu = await gpu_probe.read()
    return await asyncio.to_thread(sampler.snapshot, gpu.gpus, gpu.status)


async def open_resource_sampler(config: Config, stack: contextlib.AsyncExitStack) -> ResourceSampler:
    """The lifespan's sampler, primed now so the first request already gets a real CPU percentage."""
    return await asyncio.to_thread(ResourceSampler)


def _busy_percent(before: Any, after: Any) -> float:
    total = _total_time(after) - _total_time(before)
    idle = _idle_time(after) - _idle_time(before)
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100 * (total - idle) / total)), 1)


def _total_time(times: Any) -> float:
    # On Linux guest time is already counted in user and nice (psutil subtracts it the same way).
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle_time(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0.0))


def _cpu(reading: _CpuReading) -> Cpu:
    one, five, fifteen = psutil.getloadavg()
    return Cpu(
        percent=reading.total,
        per_core_percent=reading.per_core,
        logical_cores=psutil.cpu_count(logical=True),
        physical_cores=psutil.cpu_count(logical=False),
        load_average=LoadAverage(
            one_minute=round(one, 2), five_minutes=round(five, 2), fifteen_minutes=round(fifteen, 2)
        ),
    )


def _memory() -> Memory:
    memory = psutil.virtual_memory()
    return Memory(
        total_bytes=memory.total,
        available_bytes=memory.available,
        used_bytes=memory.used,
        percent=memory.percent,
    )


def _swap() -> Swap:
    swap = psutil.swap_memory()
    return Swap(total_bytes=swap.total, used_bytes=swap.used, free_bytes=swap.free, percent=swap.percent)


def _disks() -> tuple[list[Disk], list[SkippedMount]]:
    disks: list[Disk] = []
    skipped: list[SkippedMount] = []
    seen: set[str] = set()
    for part in psutil.disk_partitions(all=True):
        # Bind mounts repeat a device (a container's /etc/hosts); it is listed once, at its first mount.
        key = part.device if part.device.startswith("/dev/") else part.mountpoint
        if part.fstype in _PSEUDO_FS or key in seen:
            continue
        seen.add(key)
        if part.fstype in _NETWORK_FS:
            skipped.append(_skip(part, "network filesystem, not probed (statvfs may hang)"))
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError as exc:
            skipped.append(_skip(part, exc.strerror or str(exc)))
            continue
        if usage.total:
            disks.append(Disk.of(part.mountpoint, part.device, part.fstype, usage))
    return disks, skipped


def _skip(part: Any, reason: str) -> SkippedMount:
    return SkippedMount(mountpoint=part.mountpoint, fstype=part.fstype, reason=reason)


def _network() -> Network:
    interfaces = [_counters(name, c) for name, c in sorted(psutil.net_io_counters(pernic=True).items())]
    fields = [f for f in NetworkCounters.__struct_fields__ if f != "interface"]
    total = {f: sum(getattr(nic, f) for nic in interfaces) for f in fields}
    return Network(total=NetworkCounters(interface="all", **total), interfaces=interfaces)


def _counters(name: str, c: Any) -> NetworkCounters:
    return NetworkCounters(
        interface=name,
        bytes_sent=c.bytes_sent,
        bytes_received=c.bytes_recv,
        packets_sent=c.packets_sent,
        packets_received=c.packets_recv,
        errors_in=c.errin,
        errors_out=c.errout,
        drops_in=c.dropin,
        drops_out=c.dropout,
    )
