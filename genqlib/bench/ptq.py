"""Cost of reconstruction for each mini teacher: seconds per 1,000 iterations per block, in total and in the
optimisation loop alone, with peak memory; QDrop at W4A4 on real private-set images at a profile's settings.

The total includes each block's fixed costs (caching the block's inputs and outputs, the step-size search);
the loop figure is what the iteration count multiplies. Threads, CPU model and load are recorded with it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from genqlib.baselines import real_data
from genqlib.bench import write_record
from genqlib.machine import machine_record
from genqlib.profiles import REPO_ROOT, get_profile
from genqlib.quant import ENGINE, QuantConfig, ReconConfig, quantize, reconstruct
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "ptq.json"
TEACHERS = ("resnet", "mobilenet", "vit")


def _peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_teacher(teacher: str, calib: torch.Tensor, recon: ReconConfig) -> dict:
    """One QDrop W4A4 reconstruction of ``teacher``: per-block seconds per 1,000 iterations."""
    model = load_teacher(teacher)
    start = time.perf_counter()
    qmodel = reconstruct(quantize(model, QuantConfig(w_bits=4, a_bits=4)), model, calib, recon)
    seconds = time.perf_counter() - start
    blocks = [r for r in qmodel.recon_log if "block" in r]
    loop = sum(r["optimise_seconds"] for r in blocks)
    per_k = 1000 / (recon.iters * len(blocks))
    return {
        "config": qmodel.describe(),
        "blocks": len(blocks),
        "seconds": round(seconds, 2),
        "seconds_per_1k_iters_per_block": round(seconds * per_k, 2),
        "loop_seconds_per_1k_iters_per_block": round(loop * per_k, 2),
    }


def bench_ptq(
    out_path: str | Path = DEFAULT_OUT, profile: str = "mini", iters: int = 300, calib_size: int = 256
) -> dict:
    """Benchmark every teacher (see the module docstring); writes the JSON record to ``out_path``."""
    p = get_profile(profile)
    calib = real_data(calib_size, seed=p.seed)
    recon = ReconConfig(
        method="qdrop", iters=iters, batch_size=p.recon_batch_size, seed=p.seed, progress=False
    )
    rss_before = _peak_rss_mib()
    record = {
        "profile": p.name,
        "method": "qdrop",
        "engine": ENGINE,
        "calib_size": calib_size,
        "iters_per_block": iters,
        "batch_size": p.recon_batch_size,
        "teachers": {t: bench_teacher(t, calib, recon) for t in TEACHERS},
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "peak_rss_before_mib": round(rss_before, 1),
        "machine": machine_record(),
    }
    return write_record(out_path, record)
