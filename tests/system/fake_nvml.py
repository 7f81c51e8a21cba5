"""A stand-in for the `pynvml` module: the same names, fixed figures, and failures on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


MIB = 1024 * 1024


@dataclass
class FakeGpu:
    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    utilization: tuple[int, int] = (37, 12)
    memory: tuple[int, int, int] = (143771 * MIB, 1024 * MIB + 5, 142747 * MIB - 5)
    temperature: int = 41
    power_mw: int = 123456
    limit_mw: int = 700000
    fan: int = 30
    # Names of nvml functions that raise NotSupported for this card, e.g. {"nvmlDeviceGetFanSpeed"}.
    unsupported: set[str] = field(default_factory=set)


class FakeNvml:
    """Shaped like the pynvml module; counts init and shutdown calls."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVML_TEMPERATURE_GPU = 0
    nvmlMemory_v2 = 0x02000028

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: NVMLError | None = None) -> None:
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0
        self.lost: set[int] = set()
        self.memory_v2 = True

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if index in self.lost:
            raise NVMLError("GPU is lost")
        return self.gpus[index]

    def _read(self, gpu: FakeGpu, function: str, value: Any) -> Any:
        if function in gpu.unsupported:
            raise NVMLError_NotSupported()
        return value

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> bytes:
        return self._read(gpu, "nvmlDeviceGetName", gpu.name.encode())

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return self._read(gpu, "nvmlDeviceGetUUID", gpu.uuid)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        gpu_percent, memory_percent = gpu.utilization
        value = SimpleNamespace(gpu=gpu_percent, memory=memory_percent)
        return self._read(gpu, "nvmlDeviceGetUtilizationRates", value)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu, version: int | None = None) -> Any:
        if version is not None and not self.memory_v2:
            raise NVMLError("Function Not Found")
        total, used, free = gpu.memory
        return self._read(gpu, "nvmlDeviceGetMemoryInfo", SimpleNamespace(total=total, used=used, free=free))

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._read(gpu, "nvmlDeviceGetTemperature", gpu.temperature)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        return self._read(gpu, "nvmlDeviceGetPowerUsage", gpu.power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: FakeGpu) -> int:
        return self._read(gpu, "nvmlDeviceGetEnforcedPowerLimit", gpu.limit_mw)

    def nvmlDeviceGetFanSpeed(self, gpu: FakeGpu) -> int:
        return self._read(gpu, "nvmlDeviceGetFanSpeed", gpu.fan)
