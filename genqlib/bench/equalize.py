"""What cross-layer equalization (``QuantConfig(equalize=True)``) does: top-1 of each CNN teacher at W2 with
nearest rounding (FP activations), and after a short QDrop reconstruction at W2A4, with and without it;
means and std over reconstruction seeds, real private-set calibration images, the first test images."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from genqlib.datasets import DataSpec, real_split
from genqlib.fashion_mnist import Split, load_fashion_mnist
from genqlib.infra.machine import machine_record
from genqlib.metrics import evaluate
from genqlib.paper.profiles import REPO_ROOT
from genqlib.quant import ENGINE, QuantConfig, ReconConfig, quantize, reconstruct
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "equalize.json"


def _top1(model, calib, test, quant: QuantConfig, recon: ReconConfig) -> float:
    return evaluate(reconstruct(quantize(model, quant), model, calib, recon), test)["top1"]


def bench_equalize(
    out_path: str | Path = DEFAULT_OUT,
    iters: int = 300,
    calib_size: int = 256,
    n_test: int = 2000,
    seeds: int = 3,
    teachers: tuple[str, ...] = ("resnet", "mobilenet"),
) -> dict:
    """Run the comparison (module docstring) and write its JSON record to ``out_path``."""
    calib = real_split(DataSpec(), "train", n=calib_size, seed=0).images
    full = load_fashion_mnist("test")
    test = Split("test", full.images[:n_test], full.labels[:n_test])
    rows = []
    for teacher in teachers:
        model = load_teacher(teacher)
        for equalize in (False, True):
            nearest = _top1(
                model, calib, test, QuantConfig(2, None, equalize=equalize), ReconConfig("nearest", 0)
            )
            q = quantize(model, QuantConfig(2, 4, equalize=equalize)).set_quant(False, False)
            fp = evaluate(q, test)["top1"]  # equalization's own change (ReLU6 -> ReLU)
            short = [
                _top1(
                    model,
                    calib,
                    test,
                    QuantConfig(2, 4, equalize=equalize),
                    ReconConfig("qdrop", iters, seed=s, progress=False),
                )
                for s in range(seeds)
            ]
            rows.append(
                {
                    "teacher": teacher,
                    "equalize": equalize,
                    "fp_top1_after_equalize": fp,
                    "w2_nearest_top1": nearest,
                    "w2a4_qdrop_top1": short,
                    "w2a4_qdrop_mean": statistics.mean(short),
                    "w2a4_qdrop_std": statistics.stdev(short) if len(short) > 1 else 0.0,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    record = {
        "engine": ENGINE,
        "iters_per_block": iters,
        "calib_size": calib_size,
        "n_test": n_test,
        "rows": rows,
        "machine": machine_record(),
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    return record
