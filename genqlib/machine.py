"""What a measurement ran on: one record for every PTQ/QAT row and benchmark JSON.

Results are bit-identical only on the same thread count and the same torch build, and timings only on the same
CPU, so each number carries this record beside it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_record() -> dict:
    """Threads, cores, CPU model, torch version and the 1-minute load average (other work on the machine
    slows every timing) of this process, as plain JSON values."""
    return {
        "threads": torch.get_num_threads(),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
    }
