"""onnxruntime's side of an export: open a session, find what it runs in integer arithmetic, name what it cannot
take (the op and the genqlib module), and run an exported model on a batch."""

from __future__ import annotations

import io
import os
import re
import statistics
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from genqlib import __version__
from genqlib.quant.export_report import FLOAT_LAYER_OPS, INTEGER_OPS, ExportReport, max_rel_error
from genqlib.quant.inputs import Inputs, as_args, call


def session(
    path: str,
    threads: int | None = None,
    optimize: bool = True,
    optimized_path: str | None = None,
    quiet: bool = False,
):
    """An onnxruntime CPU session on ``path``: ``threads`` intra-op threads (default: torch's count), one
    inter-op thread, all graph optimizations (``optimize=False``: none); ``optimized_path`` saves the optimized
    graph."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # 3: not the "optimized model is hardware specific" notice (we save it to read it); 4 (quiet): not even an
    # error the caller catches and reports
    opts.log_severity_level = 4 if quiet else 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run(sess, inputs: Inputs) -> np.ndarray:
    """The session's first output on ``inputs`` (tensors, in the model's input order)."""
    feeds = {
        i.name: a.detach().cpu().numpy() for i, a in zip(sess.get_inputs(), as_args(inputs), strict=True)
    }
    return sess.run(None, feeds)[0]


def module_of(node_name: str, qmodel: nn.Module) -> str:
    """The genqlib module an ONNX node comes from, by the scope torch writes into its name
    ('/model/blocks/blocks.0/body/body.0/Conv' -> 'blocks.0.body.0'); '<model>' when none is found."""
    modules = dict(qmodel.model.named_modules())
    for part in reversed(node_name.strip("/").split("/")[:-1]):
        for name in (part.removeprefix("model."), part):
            if name and name in modules:
                return name
    return "<model>"


def check_runs(path: str, model: onnx.ModelProto, qmodel: nn.Module) -> str:
    """Open ``path`` in onnxruntime as written (no graph optimization); a failure names the ONNX op and the
    genqlib module it comes from. Then with all optimizations: returns the optimizer's error, '' if none
    (onnxruntime 1.32's ClipQuantFusion throws on a Clip (ReLU6) feeding a 4-bit QuantizeLinear)."""
    try:
        session(path, threads=1, optimize=False)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        text = str(err)
        for node in model.graph.node:
            if node.name and re.search(rf"['(]{re.escape(node.name)}[')]", text):
                raise RuntimeError(
                    f"onnxruntime cannot run op {node.op_type} (node {node.name}) from module "
                    f"{module_of(node.name, qmodel)}: {text}"
                ) from err
        raise RuntimeError(f"onnxruntime cannot run the exported model: {text}") from err
    try:
        session(path, threads=1, quiet=True)
    except Exception as err:  # noqa: BLE001
        return (
            f"onnxruntime {ort.__version__}'s graph optimizer fails on this file (it runs unoptimized): {err}"
        )
    return ""


def unsupported_op(qmodel: nn.Module, example: Inputs, err: Exception) -> RuntimeError:
    """The exporter's 'operator aten::X is not supported' turned into one that names the module calling X
    (found in a TorchScript trace of the model, whose nodes carry their module scope)."""
    match = re.search(r"operator '([\w:.]+)'", str(err))
    op = match.group(1) if match else "?"
    where = "<unknown module>"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # torch.jit.trace's deprecation notice: the trace only finds a name
            traced = torch.jit.trace(qmodel, as_args(example), check_trace=False, strict=False)
        short = op.split("::")[-1]
        for (
            node
        ) in traced.inlined_graph.nodes():  # the trace may spell it longer: aten::special_i0 for aten::i0
            if node.kind() == op or node.kind().split("::")[-1].endswith("_" + short):
                where = _scope_path(node.scopeName()) or "<model>"
                break
    except Exception:  # noqa: BLE001, S110 - the name is a courtesy; the original error stays attached
        pass
    return RuntimeError(f"ONNX export cannot take op {op} in module {where}: {err}")


def _scope_path(scope: str) -> str:
    """'__module.model/__module.model.blocks.0/...' -> 'blocks.0' (relative to QuantModel.model)."""
    last = scope.split("/")[-1].removeprefix("__module.")
    return last.removeprefix("model.") if last != "model" else ""


def analyse(
    path: str, qmodel: nn.Module, example: Inputs, report: ExportReport, optimizer_error: str
) -> None:
    """Fill ``report`` with what onnxruntime makes of ``path``: its optimized graph's compute ops, the layers
    it runs in integer arithmetic and in float, the kind of file, the example's error, and the metadata
    (where its optimizer fails, ``optimizer_error``: the unoptimized graph, all float)."""
    report.ort_optimizer_error = optimizer_error
    fd, opt_path = tempfile.mkstemp(suffix=".opt.onnx")
    os.close(fd)
    try:
        sess = session(path, threads=1, optimize=not optimizer_error, optimized_path=opt_path)
        optimized = onnx.load(opt_path)
    finally:
        os.remove(opt_path)
    ops = Counter(n.op_type for n in optimized.graph.node)
    report.ort_compute_ops = {k: v for k, v in ops.items() if k in INTEGER_OPS or k in FLOAT_LAYER_OPS}
    report.integer_layers = sum(ops[k] for k in INTEGER_OPS)
    report.float_layers, report.float_quantized_input = float_layers(optimized)
    report.kind = "integer-executable" if report.integer_layers else "interchange"
    with torch.no_grad():
        ours = qmodel(*as_args(example)).numpy()
    report.example_max_rel_error = max_rel_error(run(sess, example), ours)
    report.metadata = _metadata(qmodel, report, optimizer_error)


def float_layers(graph_model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Names of the conv/linear nodes an optimized graph runs in float (a weight that is an initializer or a
    dequantized one; q @ k^T in attention, two activations, is no layer), and those of them whose activation
    input is dequantized: quantized in the file, float in the runtime."""
    graph = graph_model.graph
    inits = {t.name for t in graph.initializer}
    made = {out: n for n in graph.node for out in n.output}

    def constant(name: str) -> bool:
        node = made.get(name)
        return name in inits or (
            node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits
        )

    def dequantized(name: str) -> bool:
        node = made.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] not in inits

    layers = [
        n for n in graph.node if n.op_type in FLOAT_LAYER_OPS and len(n.input) > 1 and constant(n.input[1])
    ]
    return [n.name for n in layers], [n.name for n in layers if dequantized(n.input[0])]


def _metadata(qmodel: nn.Module, report: ExportReport, optimizer_error: str = "") -> dict[str, str]:
    widths = ";".join(f"{n}=W{w['bits']}/{w['container']}" for n, w in report.weights.items())
    acts = ";".join(
        f"{k}=A{a['bits']}/{a['container']}{'+clip' if a['clip'] else ''}" for k, a in report.acts.items()
    )
    return {
        "genqlib_version": __version__,
        "genqlib_config": qmodel.describe(),
        "genqlib_kind": report.kind,
        "genqlib_layer_widths": widths,
        "genqlib_act_widths": acts,
        "genqlib_containers": "weights: integers shifted by -2^(b-1) into signed types; activations as genqlib's grid",
        "genqlib_bias": f"{report.int32_biases} int32 at s_in*s_w (max change {report.bias_max_change:.3g}), rest float",
        "genqlib_onnxruntime": f"onnxruntime {ort.__version__}: {report.integer_layers} integer conv/linear kernels, "
        f"{len(report.float_layers)} float, {len(report.float_quantized_input)} of them with a quantized input "
        f"({', '.join(report.float_quantized_input)})"
        + (f"; {optimizer_error[:300]}" if optimizer_error else ""),
    }


def ort_logits(
    path: str, images: torch.Tensor, batch_size: int = 500, threads: int | None = None, optimize: bool = True
) -> torch.Tensor:
    """Logits of an exported model on ``images``, in batches (``optimize=False``: the file's ops as written)."""
    sess = session(str(path), threads=threads, optimize=optimize)
    outs = [run(sess, images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.from_numpy(np.concatenate(outs))


def compare(
    qmodel: nn.Module, path: str, images: torch.Tensor, batch_size: int = 500, optimize: bool = True
) -> dict[str, float]:
    """onnxruntime on the exported file against genqlib's fake quantization on ``images``: max relative logit
    error (``max |a - b| / max |b|`` over all logits), top-1 agreement, and how many images differ in top-1.
    ``optimize=False`` runs the file's QDQ ops as written (no fusion into integer kernels)."""
    theirs = ort_logits(path, images, batch_size, optimize=optimize)
    with torch.no_grad():
        ours = torch.cat(
            [call(qmodel, images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )
    agree = (theirs.argmax(1) == ours.argmax(1)).float()
    return {
        "max_rel_error": max_rel_error(theirs.numpy(), ours.numpy()),
        "top1_agreement": float(agree.mean()),
        "top1_disagreements": int((1 - agree).sum()),
        "n": len(images),
    }


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def export_fp32(model: torch.nn.Module, path: Path, example: torch.Tensor) -> None:
    """The FP32 teacher as ONNX (same exporter and opset as the quantized export, dynamic batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.onnx.export(
            model, (example,), buf, dynamo=False, opset_version=20, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    path.write_bytes(buf.getvalue())
