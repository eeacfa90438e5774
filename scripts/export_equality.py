"""onnxruntime on the exported file against genqlib's fake quantization on the full Fashion-MNIST test split: the
three mini teachers at W8A8, W4A4 and W2A2 after a short QDrop reconstruction on real private-set images; the
file run as written (no graph optimization) and as onnxruntime optimizes it (integer kernels). Writes
figures/bench/export_equality[_TEACHERS].json. ``python scripts/export_equality.py [iters] [teacher,...]``."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from genqlib.datasets import real_split
from genqlib.fashion_mnist import load_fashion_mnist
from genqlib.infra.machine import machine_record
from genqlib.infra.paths import REPO_ROOT
from genqlib.paper.profiles import get_profile
from genqlib.quant import ENGINE, QuantConfig, ReconConfig, quantize, reconstruct
from genqlib.quant.export import export
from genqlib.quant.export_ort import compare
from genqlib.zoo import load_teacher


def main(iters: int = 100, teachers: tuple[str, ...] = ("resnet", "mobilenet", "vit")) -> None:
    test = load_fashion_mnist("test").images
    calib = real_split(get_profile("mini"), "train", n=256, seed=0).images
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for teacher in teachers:
            model = load_teacher(teacher)
            for bits in (8, 4, 2):
                recon = ReconConfig("qdrop", iters, progress=False)
                q = reconstruct(quantize(model, QuantConfig(bits, bits)), model, calib, recon)
                report = export(q, Path(tmp) / f"{teacher}_{bits}.onnx", test[:4])
                row = {
                    "teacher": teacher,
                    "bits": bits,
                    "kind": report.kind,
                    "integer_layers": report.integer_layers,
                }
                row["as_written"] = compare(q, report.path, test, optimize=False)
                if not report.ort_optimizer_error:
                    row["optimized"] = compare(q, report.path, test)
                else:
                    row["optimized"] = report.ort_optimizer_error[:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
    record = {
        "engine": ENGINE,
        "iters_per_block": iters,
        "calib": "256 private-set images",
        "n_test": len(test),
        "rows": rows,
    }
    record["machine"] = machine_record()
    suffix = "" if len(teachers) == 3 else "_" + "_".join(teachers)
    out = REPO_ROOT / "figures" / "bench" / f"export_equality{suffix}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    main(iters, tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("resnet", "mobilenet", "vit"))
