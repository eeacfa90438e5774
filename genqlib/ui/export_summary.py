"""What notebook 04 shows after PTQ: the headline model exported to ONNX, reloaded in onnxruntime, evaluated on
the test split against genqlib's own fake quantization, with a speed and size table (FP32 PyTorch, FP32
onnxruntime, the exported model in onnxruntime)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from genqlib.fashion_mnist import Split
from genqlib.quant.export import export
from genqlib.quant.export_ort import export_fp32, median_ms, ort_logits, run, session
from genqlib.ui.context import format_table


def onnx_summary(
    qmodel: nn.Module, fp_model: nn.Module, test: Split, path: str | Path, threads: int = 2, repeats: int = 20
) -> dict:
    """Export ``qmodel`` to ``path``, run it in onnxruntime on ``test`` and time it against FP32.

    Returns ``{"report": ExportReport, "rows": [...], "table": str}``: one row per engine (top-1, agreement
    with genqlib's fake-quant top-1, batch-64 latency in ms, file size in KiB).
    """
    report = export(qmodel, path, test.images[:4])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            ours = torch.cat([qmodel(test.images[i : i + 500]) for i in range(0, len(test.images), 500)])
            fp = torch.cat([fp_model(test.images[i : i + 500]) for i in range(0, len(test.images), 500)])
        theirs = ort_logits(report.path, test.images, threads=threads)
        x = test.images[:64]
        with tempfile.TemporaryDirectory() as tmp:
            fp_path = Path(tmp) / "fp32.onnx"
            export_fp32(fp_model, fp_path, test.images[:2])
            fp_sess, q_sess = session(str(fp_path), threads), session(report.path, threads)
            with torch.no_grad():
                t_torch = median_ms(lambda: fp_model(x), repeats)
            t_fp, t_q = (
                median_ms(lambda: run(fp_sess, x), repeats),
                median_ms(lambda: run(q_sess, x), repeats),
            )
            fp_kib = fp_path.stat().st_size / 1024
    finally:
        torch.set_num_threads(previous)

    def top1(logits: torch.Tensor) -> float:
        return float((logits.argmax(1) == test.labels).float().mean() * 100)

    agree = float((theirs.argmax(1) == ours.argmax(1)).float().mean() * 100)
    name = qmodel.config.describe().split(",")[0]
    rows = [
        {"engine": "PyTorch FP32", "top1": top1(fp), "agree %": "-", "b64 ms": t_torch, "KiB": "-"},
        {"engine": "onnxruntime FP32", "top1": top1(fp), "agree %": "-", "b64 ms": t_fp, "KiB": fp_kib},
        {
            "engine": f"genqlib {name} (fake quant)",
            "top1": top1(ours),
            "agree %": 100.0,
            "b64 ms": "-",
            "KiB": "-",
        },
        {
            "engine": f"onnxruntime {name} ({report.kind})",
            "top1": top1(theirs),
            "agree %": agree,
            "b64 ms": t_q,
            "KiB": report.file_bytes / 1024,
        },
    ]
    table = format_table(rows, ["engine", "top1", "agree %", "b64 ms", "KiB"], floats="{:.1f}")
    return {"report": report, "rows": rows, "table": table}
