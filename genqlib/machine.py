"""What a measurement ran on: one record for every PTQ/QAT row and benchmark JSON.

Results are bit-identical only on the same thread count, the same torch build and the same kind of CPU (torch
and oneDNN pick their kernels by the vector instructions the CPU has: committed one-thread rows made on one
"AMD EPYC" recompute differently on another), and timings only on the same CPU, so each number carries
this record beside it: the model name, and the CPU family, model number and torch's kernel capability that
tell two CPUs of one model name apart (a cloud VM's name is often just "AMD EPYC").
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


def cpu_kind() -> str:
    """``family/model`` from ``/proc/cpuinfo`` (e.g. "26/2" for AMD's Zen 5), and torch's kernel capability
    (``AVX512``, ``AVX2``, ...): what decides which kernels compute a result."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    family = f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"
    return f"{family} {torch.backends.cpu.get_cpu_capability()}"


def machine_record() -> dict:
    """Threads, cores, CPU model and kind (``cpu_kind``), torch version and the 1-minute load average (other
    work on the machine slows every timing) of this process, as plain JSON values."""
    return {
        "threads": torch.get_num_threads(),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "torch": torch.__version__,
    }
