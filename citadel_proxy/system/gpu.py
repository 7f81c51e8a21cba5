"""NVIDIA GPUs read through NVML in nvidia-smi's units; no driver or no GPU is a reason, never an error."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from citadel_proxy.config.schema import Config

T = TypeVar("T")

_MIB = 1024 * 1024
# A failed nvmlInit is retried at most this often: at boot the driver may load after the gateway starts.
_RETRY_INIT_S = 60.0


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU; a field the card does not support (fan on a passively cooled card) is null."""

    index: int
    name: str | None
    uuid: str | None
    utilization_gpu_percent: int | None
    utilization_memory_percent: int | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    # MiB as nvidia-smi prints them (bytes // 2**20), so the two can be compared by eye.
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    fan_speed_percent: int | None
    driver_version: str | None
    cuda_driver_version: str | None


class GpuReport(msgspec.Struct, frozen=True, kw_only=True):
    gpus: list[GpuInfo]
    # "ok", or why `gpus` is empty or short ("NVML unavailable: ...", "no NVIDIA GPU found").
    status: str


class GpuProbe:
    """Owns NVML for the process: initialised on first use, shut down by `close`.

    `nvml` is the `pynvml` module or anything shaped like it (tests pass a fake); None imports pynvml
    when first needed. NVML is initialised once; a failed start is retried after a minute at most.
    """

    def __init__(self, nvml: Any = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self._clock = clock
        # Reads come from several worker threads; one lock keeps init, reads and shutdown in order.
        self._lock = threading.Lock()
        self._ready = False
        self._failure = ""
        self._failed_at = -math.inf

    async def read(self) -> GpuReport:
        return await asyncio.to_thread(self.sample)

    def sample(self) -> GpuReport:
        """Blocking NVML reads: call from a worker thread (`read` does)."""
        with self._lock:
            reason = self._ensure_started()
            if reason:
                return GpuReport(gpus=[], status=reason)
            return _read_all(self._nvml)

    def close(self) -> None:
        with self._lock:
            if self._ready:
                self._ready = False
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlShutdown()

    def _ensure_started(self) -> str:
        if self._ready:
            return ""
        if self._failure and self._clock() - self._failed_at < _RETRY_INIT_S:
            return self._failure
        self._failure = self._start()
        self._ready = not self._failure
        self._failed_at = self._clock()
        return self._failure

    def _start(self) -> str:
        """Imports (when needed) and initialises NVML; returns why it failed, or ''."""
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                return "NVML unavailable: nvidia-ml-py (pynvml) is not installed"
            self._nvml = pynvml
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            if isinstance(exc, getattr(nvml, "NVMLError_LibraryNotFound", ())):
                return "NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver installed)"
            return f"NVML unavailable: {exc}"
        return ""


def _read_all(nvml: Any) -> GpuReport:
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        return GpuReport(gpus=[], status=f"NVML error: {exc}")
    if count == 0:
        return GpuReport(gpus=[], status="no NVIDIA GPU found")
    driver = _field(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion()))
    cuda = _field(nvml, lambda: _cuda_version(nvml.nvmlSystemGetCudaDriverVersion()))
    gpus: list[GpuInfo] = []
    lost: list[str] = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            lost.append(f"GPU {index} unreadable: {exc}")
            continue
        gpus.append(_read_gpu(nvml, index, handle, driver, cuda))
    return GpuReport(gpus=gpus, status="; ".join(lost) or "ok")


def _read_gpu(nvml: Any, index: int, handle: Any, driver: str | None, cuda: str | None) -> GpuInfo:
    util = _field(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    memory = _field(nvml, lambda: _memory(nvml, handle))
    total, used, free = (memory.total, memory.used, memory.free) if memory else (None, None, None)
    return GpuInfo(
        index=index,
        name=_field(nvml, lambda: _text(nvml.nvmlDeviceGetName(handle))),
        uuid=_field(nvml, lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
        utilization_gpu_percent=util.gpu if util else None,
        utilization_memory_percent=util.memory if util else None,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=free,
        memory_total_mib=_mib(total),
        memory_used_mib=_mib(used),
        memory_free_mib=_mib(free),
        temperature_c=_field(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        # NVML reports milliwatts; nvidia-smi prints watts with two decimals.
        power_draw_w=_watts(_field(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))),
        power_limit_w=_watts(_field(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))),
        fan_speed_percent=_field(nvml, lambda: nvml.nvmlDeviceGetFanSpeed(handle)),
        driver_version=driver,
        cuda_driver_version=cuda,
    )


def _memory(nvml: Any, handle: Any) -> Any:
    # v2 counts driver-reserved memory apart from `used`, as nvidia-smi does; older drivers lack it.
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        with contextlib.suppress(nvml.NVMLError):
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
    return nvml.nvmlDeviceGetMemoryInfo(handle)


def _field(nvml: Any, read: Callable[[], T]) -> T | None:
    """One NVML read; NotSupported, NoPermission and the like leave the field null."""
    try:
        return read()
    except nvml.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def _mib(value: int | None) -> int | None:
    return None if value is None else value // _MIB


def _watts(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else round(milliwatts / 1000, 2)


async def open_gpu_probe(config: Config, stack: contextlib.AsyncExitStack) -> GpuProbe:
    """The lifespan's probe; NVML itself starts on the first read and stops when the stack closes."""
    probe = GpuProbe()
    stack.push_async_callback(asyncio.to_thread, probe.close)
    return probe
