"""One line that names the hardware a number was measured on (recorded with checkpoints and benchmarks)."""

from __future__ import annotations

import os
import platform

import torch


def describe(device: str | torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'AMD EPYC ..., 2 cores usable, 1 torch threads' on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores usable, {torch.get_num_threads()} torch threads"
