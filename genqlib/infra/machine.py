"""What a measurement ran on: one record for every PTQ/QAT row and benchmark JSON.

Results are bit-identical only on the same thread count, the same torch build and the same kind of CPU (torch
and oneDNN pick their kernels by the vector instructions the CPU has: committed one-thread rows made on one
"AMD EPYC" recompute differently on another), and timings only on the same CPU, so each number carries
this record beside it: the model name, and the CPU family, model number and torch's kernel capability that
tell two CPUs of one model name apart (a cloud VM's name is often just "AMD EPYC").
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
        "torch": str(torch.__version__),  # a str subclass (TorchVersion) that a weights-only load refuses
    }


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_HEAP_LIMIT = 32 << 20  # glibc's largest M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory for tensors under 32 MB instead of returning it to the system.

    By default glibc serves each large block with a fresh ``mmap`` (or trims the heap after a free), so every
    new activation tensor of a CPU forward or backward pass pays page faults on first touch: for a batch-32
    BRECQ step or a batch-100 evaluation that costs more than the arithmetic (an out-of-place ``clamp`` of a
    2.4 MB tensor took 3.7 ms with faults against 0.3 ms without). Raising the mmap and trim thresholds keeps
    those pages in the heap. Values are unchanged: torch aligns every CPU tensor to 64 bytes itself, so no
    kernel sees another alignment (reconstructed weights hash the same with and without). Returns whether
    the setting took (False where the C library is not glibc); ``GENQ_KEEP_FREED_MEMORY=0`` turns it off.
    """
    if os.environ.get("GENQ_KEEP_FREED_MEMORY", "1") == "0" or platform.system() != "Linux":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt)
    settings = ((_M_MMAP_THRESHOLD, _HEAP_LIMIT), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(mallopt(param, value) == 1 for param, value in settings)
