"""Observation of the host the gateway runs on: CPU, memory, disks, network, NVIDIA GPUs and storage."""

from __future__ import annotations

from citadel_proxy.system.gpu import GpuInfo, GpuProbe, GpuReport, open_gpu_probe
from citadel_proxy.system.resources import (
    Resources,
    ResourceSampler,
    collect_resources,
    open_resource_sampler,
)
from citadel_proxy.system.storage import StoragePaths, StorageUsage, storage_paths, storage_usage

__all__ = [
    "GpuInfo",
    "GpuProbe",
    "GpuReport",
    "ResourceSampler",
    "Resources",
    "StoragePaths",
    "StorageUsage",
    "collect_resources",
    "open_gpu_probe",
    "open_resource_sampler",
    "storage_paths",
    "storage_usage",
]
