"""One-shot check on a GPU machine: gpu.py's figures beside nvidia-smi's, with the differences.

Run `python -m citadel_proxy.system.gpu_check`; it always exits 0.
"""

from __future__ import annotations

import subprocess
import sys

from citadel_proxy.system.gpu import GpuInfo, GpuProbe

_QUERY = "name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
# (nvidia-smi column, our field, unit) in the order of _QUERY.
_COLUMNS = (
    ("name", "name", ""),
    ("utilization.gpu", "utilization_gpu_percent", "%"),
    ("memory.used", "memory_used_mib", "MiB"),
    ("memory.total", "memory_total_mib", "MiB"),
    ("temperature.gpu", "temperature_c", "C"),
    ("power.draw", "power_draw_w", "W"),
)


def nvidia_smi() -> list[list[str]] | str:
    """nvidia-smi's rows, one per GPU, or why there are none."""
    command = ["nvidia-smi", f"--query-gpu={_QUERY}", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if done.returncode != 0:
        return f"nvidia-smi exited {done.returncode}: {(done.stdout + done.stderr).strip()}"
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def compare(gpu: GpuInfo | None, row: list[str] | None) -> list[str]:
    lines = []
    for index, (column, field, unit) in enumerate(_COLUMNS):
        ours = getattr(gpu, field) if gpu else None
        theirs = row[index] if row and index < len(row) else None
        lines.append(
            f"  {column:<16} ours={ours!s:<28} nvidia-smi={theirs!s:<28} {_difference(ours, theirs, unit)}"
        )
    return lines


def _difference(ours: object, theirs: str | None, unit: str) -> str:
    if ours is None or theirs is None:
        return "diff=n/a"
    if not unit:
        return "same" if str(ours) == theirs else "DIFFERENT"
    try:
        return f"diff={float(str(ours)) - float(theirs):+.2f} {unit}"
    except ValueError:
        return "diff=n/a"


def main() -> int:
    probe = GpuProbe()
    try:
        report = probe.sample()
    finally:
        probe.close()
    smi = nvidia_smi()
    out = [f"gpu.py status: {report.status}"]
    if report.gpus:
        first = report.gpus[0]
        out.append(f"driver {first.driver_version}, CUDA {first.cuda_driver_version}")
    rows = smi if isinstance(smi, list) else []
    if isinstance(smi, str):
        out.append(smi)
    for index in range(max(len(report.gpus), len(rows))):
        gpu = report.gpus[index] if index < len(report.gpus) else None
        out.append(f"GPU {index} ({gpu.uuid if gpu else 'not seen by gpu.py'}):")
        out.extend(compare(gpu, rows[index] if index < len(rows) else None))
        if gpu:
            out.append(f"  also: power limit {gpu.power_limit_w} W, fan {gpu.fan_speed_percent} %")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
