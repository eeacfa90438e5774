"""Speed and size of exported models: latency (batch 1) and throughput (batch 64) of FP32 PyTorch, FP32
onnxruntime and the W8A8 QDQ export in onnxruntime (its integer kernels where it fuses them), on 2 threads,
for each mini teacher; file sizes of the FP32, W8A8 and W4A4 (INT4 weights) exports. Timings are medians of
repeated runs after warm-up; the machine record (with the load average) is kept beside them.

A reference row, ``ort_ortquant``: onnxruntime's own static QDQ quantizer (``quantize_static``: per-channel
int8 weights, uint8 activations on *every* tensor, MinMax on the same calibration images) applied to the FP32
file. It is not genqlib's model: it shows the speed of full integer coverage, where genqlib's placement (BRECQ:
a conv before a residual add keeps an FP output) leaves such convs in float between integer ones."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from genqlib.bench import write_record
from genqlib.datasets import real_split
from genqlib.fashion_mnist import load_fashion_mnist
from genqlib.infra.machine import machine_record
from genqlib.infra.paths import REPO_ROOT
from genqlib.paper.profiles import get_profile
from genqlib.quant import QuantConfig, ReconConfig, quantize, reconstruct
from genqlib.quant.export import export
from genqlib.quant.export_ort import export_fp32, median_ms, run, session
from genqlib.zoo import load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "export.json"


def ort_quantize_static(fp32_path: Path, out_path: Path, calib: torch.Tensor) -> None:
    """onnxruntime's own static QDQ quantization of an FP32 file (the reference row of the module docstring)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calib[i : i + 32].numpy()} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(
        str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def _timings(model, paths: dict[str, Path], images: torch.Tensor, threads: int, repeats: dict) -> dict:
    out = {}
    for batch, n in repeats.items():
        x = images[:batch]
        with torch.no_grad():
            out[f"torch_fp32_b{batch}_ms"] = median_ms(lambda x=x: model(x), n)
        for name, path in paths.items():
            sess = session(str(path), threads=threads)
            out[f"ort_{name}_b{batch}_ms"] = median_ms(lambda s=sess, x=x: run(s, x), n)
    return out


def bench_export(
    out_path: str | Path = DEFAULT_OUT,
    threads: int = 2,
    teachers: tuple[str, ...] = ("resnet", "mobilenet", "vit"),
    repeats: tuple[int, int] = (200, 30),
    calib_size: int = 256,
) -> dict:
    """Run the comparison (module docstring) and write its JSON record to ``out_path``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    test = load_fashion_mnist("test")
    calib = real_split(get_profile("mini"), "train", n=calib_size, seed=0).images
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for teacher in teachers:
                model = load_teacher(teacher).eval()
                paths = {"fp32": Path(tmp) / f"{teacher}_fp32.onnx"}
                export_fp32(model, paths["fp32"], test.images[:2])
                reports = {}
                for bits in (8, 4):
                    q = reconstruct(
                        quantize(model, QuantConfig(bits, bits)),
                        model,
                        calib,
                        ReconConfig("nearest", 0, progress=False),
                    )
                    reports[bits] = export(q, Path(tmp) / f"{teacher}_w{bits}a{bits}.onnx", test.images[:4])
                paths["w8a8"] = Path(reports[8].path)
                paths["ortquant"] = Path(tmp) / f"{teacher}_ortquant.onnx"
                ort_quantize_static(paths["fp32"], paths["ortquant"], calib)
                row = {
                    "teacher": teacher,
                    "bytes_fp32": paths["fp32"].stat().st_size,
                    "bytes_w8a8": reports[8].file_bytes,
                    "bytes_w4a4": reports[4].file_bytes,
                    "w8a8_kind": reports[8].kind,
                    "w8a8_integer_layers": reports[8].integer_layers,
                    "w8a8_float_layers": len(reports[8].float_layers),
                    "w8a8_ort_ops": reports[8].ort_compute_ops,
                    **_timings(model, paths, test.images, threads, {1: repeats[0], 64: repeats[1]}),
                }
                row["bytes_ortquant"] = paths["ortquant"].stat().st_size
                for name in ("torch_fp32", "ort_fp32", "ort_w8a8", "ort_ortquant"):
                    row[f"{name}_b64_images_per_s"] = 64 / row[f"{name}_b64_ms"] * 1e3
                rows.append(row)
                print(row, flush=True)
    finally:
        torch.set_num_threads(previous)
    import onnxruntime

    record = {
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "calib": f"nearest rounding, {calib_size} private-set images",
        "rows": rows,
        "machine": {**machine_record(), "threads": threads},
    }
    return write_record(out_path, record)
