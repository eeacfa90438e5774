"""``export(qmodel, path, example) -> ExportReport``: a quantized model as an ONNX QDQ file that onnxruntime runs.

The file computes what genqlib's fake quantization computes: every weight is its exact integer tensor (AdaRound's
learned rounding included, ``WeightQuantizer.integer``) in an integer initializer, dequantized per output
channel with genqlib's steps and zero points; every activation quantizer becomes a per-tensor
QuantizeLinear -> DequantizeLinear pair with its step and zero point, at the very place genqlib's hook applies
it (so the edge convention, the shared and dropped sites, everything ``quantize`` decided, carries over).

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The dynamo exporter needs
``onnxscript`` (not a genqlib dependency) and cannot take a custom autograd Function's ``symbolic``; the
TorchScript one runs offline on torch 2.13 (with a DeprecationWarning, silenced here) and lets each quantizer
emit one placeholder node carrying its grid. ``onnx_qdq.lower`` then writes the standard QDQ nodes, which torch's
exporter cannot express (INT4/UINT4, narrow grids, integer weight initializers: see there).

Which file it is (``ExportReport.kind``, and the file's metadata): onnxruntime's optimized graph is inspected
(``SessionOptions.optimized_model_filepath``). "integer-executable": onnxruntime runs conv/linear layers as
integer kernels (QLinearConv, QGemm, MatMulInteger, ...); how many, and which layers stay float although their
input is quantized, is in the report: a layer whose output genqlib leaves FP (a conv before a residual add, as
BRECQ places the quantizers) has no QuantizeLinear after it to fuse with, so it runs in float. "interchange":
no integer kernel; a faithful file for a hardware toolchain, that onnxruntime runs by dequantizing to float.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from genqlib.quant.export_report import ExportReport
from genqlib.quant.inputs import Inputs, as_args, check_inputs, rows
from genqlib.quant.layers import fp_weight, is_quantized, weight_quantizer
from genqlib.quant.quantizer import ActQuantizer, WeightQuantizer

TORCH_OPSET = 20  # the TorchScript exporter's highest; the file is raised to opset 21 by onnx_qdq.lower
OPSET = 21


def _grid(q: WeightQuantizer | ActQuantizer) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(step, zero point, qmin, qmax) such that fake quantization is
    ``step * (clamp(round(x / step) + zero_point, qmin, qmax) - zero_point)`` (the quantizer's ``grid()``)."""
    step, zero, qmin, qmax = q.grid()
    return torch.as_tensor(step), torch.as_tensor(zero), int(qmin), int(qmax)


def _scalars(q: ActQuantizer) -> tuple[float, int, int, int]:
    """A per-tensor grid as Python numbers (the step a float32 value held exactly in a float)."""
    step, zero, qmin, qmax = _grid(q)
    if step.numel() != 1 or torch.as_tensor(zero).numel() != 1:
        raise ValueError("activation quantizers are per tensor: one step and one zero point")
    return float(step.detach().float()), int(torch.as_tensor(zero).round()), qmin, qmax


def check_exportable(qmodel: nn.Module) -> None:
    """Refuse what cannot be exported faithfully: not a QuantModel, an uncalibrated activation quantizer, QDrop
    still mixing in FP values, or soft AdaRound rounding."""
    if not (isinstance(qmodel, nn.Module) and isinstance(getattr(qmodel, "acts", None), nn.ModuleDict)):
        raise TypeError(f"export takes a genqlib QuantModel (from quantize), got {type(qmodel).__name__}")
    raw = [k for k, q in qmodel.acts.items() if q.enabled and not bool(q.calibrated)]
    if raw:
        raise ValueError(
            f"refusing to export: {len(raw)} activation quantizer(s) never calibrated ({', '.join(raw[:3])}): "
            "run reconstruct(...) (method='nearest' at least) or feed images inside calibrating(model) first"
        )
    for key, q in qmodel.acts.items():
        if q.drop_prob > 0 or not q.hooked:
            raise ValueError(
                f"refusing to export: activation quantizer {key} is inside a reconstruction step"
            )
    for name, layer in qmodel.layers().items():
        ada = weight_quantizer(layer).adaround
        if ada is not None and ada.mode != "hard":
            raise ValueError(f"refusing to export: {name} still has soft AdaRound rounding (harden it first)")


# what the placeholders stand for while an export runs, by an integer key, read before tracing starts (the
# TorchScript tracer passes a Function only tensors and scalars, and a module's Parameter read inside a traced
# Function fails with "unordered_map::at")
_SITES: dict[int, tuple[str, object]] = {}


class _ActQDQ(torch.autograd.Function):
    """Value: genqlib's own quantizer output. ONNX: one ``genqlib::ActQDQ`` node carrying the grid."""

    @staticmethod
    def forward(ctx, x, key):  # noqa: ANN001 - torch's Function signature
        step, zero, qmin, qmax, _ = _SITES[key][1]
        return (torch.clamp(torch.round(x / step) + zero, qmin, qmax) - zero) * step

    @staticmethod
    def symbolic(g, x, key):  # noqa: ANN001
        site, (step, zero, qmin, qmax, bits) = _SITES[key]
        out = g.op(
            "genqlib::ActQDQ",
            x,
            scale_f=step,
            zero_i=zero,
            qmin_i=qmin,
            qmax_i=qmax,
            bits_i=bits,
            site_s=site,
        )
        out.setType(x.type())
        return out


class _WeightDQ(torch.autograd.Function):
    """Value: the fake-quantized weight. ONNX: one ``genqlib::WeightDQ`` node holding the integer weights."""

    @staticmethod
    def forward(ctx, weight, key):  # noqa: ANN001
        return _SITES[key][1]["value"].clone()

    @staticmethod
    def symbolic(g, weight, key):  # noqa: ANN001
        site, data = _SITES[key]
        out = g.op(
            "genqlib::WeightDQ",
            w_t=data["int"],
            scale_t=data["scale"],
            zero_t=data["zero"],
            qmin_i=data["qmin"],
            qmax_i=data["qmax"],
            bits_i=data["bits"],
            site_s=site,
        )
        out.setType(weight.type())
        return out


@torch.no_grad()
def _weight_data(name: str, layer: nn.Module) -> dict:
    """The integer weights and grid of one layer, checked: ``step * (int - zero)`` is genqlib's weight."""
    q = weight_quantizer(layer)
    step, zero, qmin, qmax = _grid(q)
    ints = q.integer(fp_weight(layer)).detach()
    zero = torch.as_tensor(zero).detach().flatten().round()
    value = q(fp_weight(layer)).detach()
    rebuilt = step * (ints - zero.view(step.shape))
    if not torch.equal(ints, ints.round()) or ints.min() < qmin or ints.max() > qmax:
        raise ValueError(f"{name}: integer weights off the grid [{qmin}, {qmax}]")
    if not torch.equal(rebuilt, value):
        raise ValueError(f"{name}: step * (integer - zero point) differs from the quantized weight")
    return {
        "int": ints.to(torch.int32),
        "scale": step.detach().float().flatten().contiguous(),
        "zero": zero.to(torch.int32),
        "qmin": qmin,
        "qmax": qmax,
        "bits": int(q.bits),
        "value": value,
    }


@contextlib.contextmanager
def _placeholders(qmodel: nn.Module) -> Iterator[None]:
    """Inside: each enabled quantizer's forward is the autograd Function whose symbolic emits its node."""
    patched: list[nn.Module] = []
    try:
        for name, layer in qmodel.layers().items():
            q = weight_quantizer(layer)
            if q.enabled:
                key = len(_SITES)
                _SITES[key] = (name, _weight_data(name, layer))
                q.forward = lambda w, k=key: _WeightDQ.apply(w, k)
                patched.append(q)
        for site, q in qmodel.acts.items():
            if q.enabled:
                key = len(_SITES)
                _SITES[key] = (site, (*_scalars(q), int(q.bits)))
                q.forward = lambda x, k=key: _ActQDQ.apply(x, k)
                patched.append(q)
        yield
    finally:
        _SITES.clear()
        for q in patched:
            del q.forward  # the instance attribute: the class's forward shows through again


def _torch_export(qmodel: nn.Module, example: Inputs, path: str) -> None:
    from genqlib.quant import onnx_qdq

    args = as_args(example)
    names = [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))]
    axes = {n: {0: "batch"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*genqlib::.*")
        torch.onnx.export(
            qmodel,
            args,
            path,
            dynamo=False,
            opset_version=TORCH_OPSET,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            custom_opsets={onnx_qdq.DOMAIN: 1},
            do_constant_folding=True,
            autograd_inlining=False,  # keep each placeholder one node (its symbolic), not its traced forward
        )


def export(
    qmodel: nn.Module, path: str | os.PathLike, example: Inputs, int32_bias: bool = False
) -> ExportReport:
    """Write ``qmodel`` (a calibrated/reconstructed ``QuantModel``) to ``path`` as an ONNX QDQ model.

    ``example``: a batch the model accepts (its batch size is dynamic in the file). ``int32_bias``: store the
    biases of layers with quantized input and weight on the int32 grid ``s_in * s_w`` (what integer kernels
    compute with; a rounding genqlib does not do, up to half that grid: ``ExportReport.bias_max_change``).
    Default False keeps genqlib's float biases, so the file is exactly genqlib's model; onnxruntime's
    optimizer then rounds the bias itself where it fuses an integer kernel.
    Written to a temporary file beside ``path`` and renamed over it only when onnx's checker and onnxruntime
    accept it, so nothing half-written is left at ``path``.
    """
    import onnx  # here, not at the top: ``import genqlib`` stays free of onnx until a model is exported

    from genqlib.quant.export_ort import analyse, check_runs, unsupported_op

    check_exportable(qmodel)
    example = rows(check_inputs(example, "example"), 0, 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    was_training = qmodel.training
    qmodel.eval()
    try:
        with _placeholders(qmodel):
            try:
                _torch_export(qmodel, example, tmp)
            except torch.onnx.errors.UnsupportedOperatorError as err:
                raise unsupported_op(qmodel, example, err) from err
        model = onnx.load(tmp)
        report = _finish(model, qmodel, example, int32_bias)
        onnx.save(model, tmp)
        optimizer_error = check_runs(tmp, model, qmodel)
        analyse(tmp, qmodel, example, report, optimizer_error)
        onnx.helper.set_model_props(model, report.metadata)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        qmodel.train(was_training)
        if os.path.exists(tmp):
            os.remove(tmp)
    report.path, report.file_bytes = str(path), path.stat().st_size
    return report


def _finish(model, qmodel: nn.Module, example: Inputs, int32_bias: bool) -> ExportReport:  # noqa: ANN001
    """Lower the placeholders, fold weight transposes, quantize biases, drop the FP weights, check."""
    import onnx

    from genqlib.quant import onnx_qdq

    found = onnx_qdq.lower(model)
    onnx_qdq.fold_weight_transposes(model)
    n_bias, worst = onnx_qdq.quantize_biases(model) if int32_bias else (0, 0.0)
    onnx_qdq.drop_unused_initializers(model)
    onnx.checker.check_model(model, full_check=True)
    report = ExportReport(path="", opset=OPSET, file_bytes=0, kind="interchange")
    report.weights = {w["site"]: w for w in found["weights"]}
    report.acts = {a["site"]: a for a in found["acts"]}
    report.int32_biases, report.bias_max_change = n_bias, worst
    missing = [n for n, m in qmodel.layers().items() if is_quantized(m) and n not in report.weights]
    if any(weight_quantizer(qmodel.model.get_submodule(n)).enabled for n in missing):
        raise RuntimeError(f"export lost the quantized weights of {missing[:3]} (their forward never ran)")
    return report
