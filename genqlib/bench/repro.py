"""What reproduces bit for bit: one PTQ run (quantize + BRECQ + evaluate) repeated at one CPU thread, then at
more threads. The quantized model's state digest and top-1 of each repeat, and whether they match.

Float reductions in torch's CPU kernels are split across threads, so the order of additions, and with it the
last bits of every sum, depends on the thread count: a run repeats exactly at the same thread count on the same
CPU kind and torch version, and only up to rounding noise (which reconstruction can amplify into a different
rounding decision) at another thread count. ``python -m genqlib.bench repro`` writes
``figures/bench/repro.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genqlib.cache import digest
from genqlib.calibration import calibration_set
from genqlib.datasets import eval_split
from genqlib.machine import machine_record
from genqlib.metrics import evaluate
from genqlib.profiles import REPO_ROOT, get_profile
from genqlib.ptq_runs import profile_run
from genqlib.quant import quantize, reconstruct
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "repro.json"


def repeat_run(
    profile: str = "ci",
    teacher: str = "resnet",
    bits: tuple[int, int] = (2, 2),
    threads: tuple[int, ...] = (1, 1, 2),
) -> dict:
    """The profile's BRECQ run of ``teacher`` on real images, once per entry of ``threads``."""
    p = get_profile(profile)
    model, test = load_teacher(teacher), eval_split(p)
    calib = calibration_set(model, "real", p.calib_size, p, teacher).images
    run = profile_run(p, teacher, bits, "real", p.calib_size, "brecq")
    before = torch.get_num_threads()
    repeats = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            qmodel = reconstruct(quantize(model, run.quant, example=calib[:8]), model, calib, run.recon)
            repeats.append(
                {"threads": n, "state_digest": digest(qmodel), "top1": evaluate(qmodel, test)["top1"]}
            )
    finally:
        torch.set_num_threads(before)
    by_threads: dict[int, set[str]] = {}
    for r in repeats:
        by_threads.setdefault(r["threads"], set()).add(r["state_digest"])
    return {
        "profile": p.name,
        "run": run.fields(),
        "repeats": repeats,
        "same_threads_identical": all(len(d) == 1 for d in by_threads.values()),
        "all_identical": len({r["state_digest"] for r in repeats}) == 1,
        "machine": machine_record(),
    }


def bench_repro(out_path: str | Path = DEFAULT_OUT) -> dict:
    """``repeat_run`` at its defaults, printed and written to ``out_path``."""
    record = repeat_run()
    record["command"] = "python -m genqlib.bench repro"
    Path(out_path).write_text(json.dumps(record, indent=1) + "\n")
    for r in record["repeats"]:
        print(f"{r['threads']} thread(s): top-1 {r['top1']:.2f}, state {r['state_digest'][:12]}")
    print(
        f"same thread count identical: {record['same_threads_identical']}; all identical: {record['all_identical']}"
    )
    return record
