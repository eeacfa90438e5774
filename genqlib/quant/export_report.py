"""What ``export`` wrote and what onnxruntime makes of it: the report, the op names that tell integer from float
layers, and the error measure the export, its tests and its bench share."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

INTEGER_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "MatMulInteger",
    "ConvInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
)
FLOAT_LAYER_OPS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


@dataclass
class ExportReport:
    """What ``export`` wrote and what onnxruntime makes of it."""

    path: str
    opset: int
    file_bytes: int
    kind: str  # "integer-executable" or "interchange"
    weights: dict[str, dict] = field(default_factory=dict)  # layer -> bits, grid, container
    acts: dict[str, dict] = field(default_factory=dict)  # site -> bits, grid, container, clip
    int32_biases: int = 0
    bias_max_change: float = 0.0  # largest |bias change| from rounding to the int32 grid
    ort_compute_ops: dict[str, int] = field(default_factory=dict)  # optimized graph: conv/matmul-like ops
    integer_layers: int = 0  # conv/linear nodes onnxruntime runs as integer kernels
    float_layers: list[str] = field(default_factory=list)  # conv/linear nodes left in float (node names)
    float_quantized_input: list[str] = field(
        default_factory=list
    )  # of those, the ones with a quantized input
    example_max_rel_error: float = 0.0  # |ort - genqlib| / max |genqlib| on the example
    ort_optimizer_error: str = (
        ""  # onnxruntime's graph optimizer failed on the file (it then runs unoptimized)
    )
    metadata: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ort_compute_ops.items()))
        return [
            f"{self.path}: {self.kind}, opset {self.opset}, {self.file_bytes / 1024:.1f} KiB",
            f"weights: {_containers(self.weights)}; activations: {_containers(self.acts)}",
            f"onnxruntime runs {self.integer_layers} conv/linear layers in integer arithmetic, "
            f"{len(self.float_layers)} in float ({len(self.float_quantized_input)} of them with a quantized input; "
            f"{ops})",
            f"biases on the int32 grid: {self.int32_biases} (largest change {self.bias_max_change:.2e})",
            f"max |onnxruntime - genqlib| / max |genqlib| on the example: {self.example_max_rel_error:.2e}",
        ] + ([self.ort_optimizer_error] if self.ort_optimizer_error else [])


def _containers(entries: dict[str, dict]) -> str:
    counts = Counter((e["bits"], e["container"]) for e in entries.values())
    return ", ".join(f"{n} x {b}-bit in {c}" for (b, c), n in sorted(counts.items())) or "none"


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|``: the relative logit error ``export`` and the tests report."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
