"""Wall time of one grid of PTQ runs computed one after the other in this process (torch's default thread
count) against ``workers.run_all`` (one one-thread worker process per CPU), and the rows of both.

The grid is ``runs`` seeds of one teacher at W2A2 on real images, at the profile's evaluation set; each way
fills its own temporary cache, so nothing is read back from an earlier run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from genqlib.bench import write_record
from genqlib.datasets import eval_split, real_split
from genqlib.infra.machine import machine_record
from genqlib.infra.workers import default_jobs
from genqlib.paper.profiles import REPO_ROOT, get_profile
from genqlib.paper.ptq_runs import PTQTask, profile_run, ptq_runs
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "workers.json"


def _timed(tasks: list[PTQTask], test, folder: Path, jobs: int) -> dict:
    start = time.perf_counter()
    rows = ptq_runs(tasks, test, folder, jobs=jobs)
    return {
        "jobs": jobs,
        "seconds": round(time.perf_counter() - start, 1),
        "threads_per_run": sorted({r["threads"] for r in rows}),
        "top1": [r["top1"] for r in rows],
    }


def bench_workers(
    out_path: str | Path = DEFAULT_OUT,
    profile: str = "mini",
    teacher: str = "resnet",
    runs: int = 4,
    iters: int = 100,
    n_calib: int = 256,
) -> dict:
    """Time the grid both ways (see the module docstring); writes the JSON record to ``out_path``."""
    p = get_profile(profile)
    model, test = load_teacher(teacher), eval_split(p)
    calib = real_split(p, "train", n=n_calib, seed=p.seed).images
    tasks = [
        PTQTask(model, calib, profile_run(p, teacher, (2, 2), "real", n_calib, iters=iters, seed=seed))
        for seed in range(runs)
    ]
    with tempfile.TemporaryDirectory(prefix="genq_bench_workers_") as tmp:
        here = _timed(tasks, test, Path(tmp) / "here", jobs=1)
        workers = _timed(tasks, test, Path(tmp) / "workers", jobs=max(2, default_jobs()))
    record = {
        "profile": p.name,
        "grid": f"{teacher} W2A2 brecq, {n_calib} real images, {iters} iterations per block, seeds 0-{runs - 1}",
        "n_eval": len(test),
        "here": {**here, "torch_threads": torch.get_num_threads()},
        "workers": workers,
        "speedup": round(here["seconds"] / workers["seconds"], 2),
        "machine": machine_record(),
    }
    return write_record(out_path, record)
