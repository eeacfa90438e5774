"""Lower genqlib's placeholder nodes in an exported ONNX graph to standard QuantizeLinear/DequantizeLinear.

Why a graph pass: torch's TorchScript exporter (the one that runs offline here, ``genqlib.quant.export``) emits
8-bit QDQ only (``fake_quantize_*`` symbolics allow the ranges (0, 255), (-128, 127), (0, 127)), has no 4-bit
ONNX type (INT4/UINT4 are opset 21, the exporter stops at opset 20), and cannot hold integer weights as
integer initializers. So the export emits one node per quantizer in a private domain, ``genqlib::ActQDQ``
(input ``x``) and ``genqlib::WeightDQ`` (no input), whose attributes carry the exact grid: step(s), zero
point(s), integer range ``[qmin, qmax]``, bit width, module path, and for weights the integer weights. This
pass replaces each with

- activations: ``QuantizeLinear(x, s, z) -> [Clip(qmin, qmax)] -> DequantizeLinear(., s, z)``, per tensor;
- weights: an integer initializer ``-> DequantizeLinear(., s, z, axis=0)``, per output channel;

in the smallest container that holds the grid: INT4/UINT4 where the width is 4, INT8/UINT8 otherwise.

Narrow ranges (2-3 and 5-7 bits) sit in 8-bit containers: QuantizeLinear saturates to the *container's* range,
so a Clip on the integer tensor (Clip takes int8/uint8) clamps to ``[qmin, qmax]`` exactly; weights need none
(their integers are clipped already and checked). Weight grids are unsigned ``[0, 2^b - 1]`` in genqlib; they
are stored shifted by ``-2^(b-1)`` (integers and zero points alike, so ``q - z`` and the weight are unchanged)
as signed INT8/INT4, the weight type integer kernels expect (onnxruntime's U8S8 path).

Then: a DequantizeLinear of a weight read only through ``Transpose(perm=[1, 0])`` (how the exporter writes a
linear layer on 3-d input) holds the transposed integers with ``axis=1``, so the runtime sees DQ -> MatMul;
optionally (``quantize_biases``), a conv/linear bias whose input and weight are both quantized becomes an int32
initializer at scale ``s_in * s_w`` (zero point 0), the convention of integer kernels (ONNX QLinearConv,
onnxruntime's quantizer; onnxruntime fuses a layer whose output is not re-quantized only with it). Rounding the
bias to that grid changes genqlib's float bias by up to half a grid step (0.07 measured on the W2A2 ResNet
teacher, where the grid is coarse), so it is off by default.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "genqlib"
OPSET = 21  # INT4/UINT4 QuantizeLinear/DequantizeLinear
INT32_MAX = 2**31 - 1

# (ONNX type, lowest, highest), smallest first; 4-bit containers only for a 4-bit grid
CONTAINERS = {
    "UINT4": (TensorProto.UINT4, 0, 15),
    "INT4": (TensorProto.INT4, -8, 7),
    "UINT8": (TensorProto.UINT8, 0, 255),
    "INT8": (TensorProto.INT8, -128, 127),
}


def container(qmin: int, qmax: int, bits: int) -> str:
    """The ONNX integer type a ``[qmin, qmax]`` grid of ``bits`` is stored in (see the module docstring)."""
    names = ("UINT4", "INT4") if bits == 4 else ("UINT8", "INT8")
    for name in names:
        _, lo, hi = CONTAINERS[name]
        if lo <= qmin and qmax <= hi:
            return name
    raise ValueError(f"no ONNX integer type holds the {bits}-bit grid [{qmin}, {qmax}]")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _tensor(name: str, kind: str, values: np.ndarray) -> onnx.TensorProto:
    """An integer initializer of type ``kind``, its values checked to fit; 4-bit ones packed two a byte."""
    onnx_type, lo, hi = CONTAINERS[kind]
    values = np.asarray(values).astype(np.int64)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{name}: integers outside {kind}'s range [{lo}, {hi}]")
    if kind.endswith("8"):
        return numpy_helper.from_array(values.astype(np.uint8 if kind == "UINT8" else np.int8), name)
    nibbles = (values.flatten() & 0xF).astype(np.uint8)  # two's complement low nibble; first element low
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    return helper.make_tensor(name, onnx_type, values.shape, packed.tobytes(), raw=True)


def _site(attrs: dict) -> str:
    site = attrs["site"]
    return site.decode() if isinstance(site, bytes) else site


def _unique(base: str, inits: list) -> str:
    taken = {t.name for t in inits}
    name, i = base, 1
    while f"{name}.scale" in taken:
        i += 1
        name = f"{base}.{i}"
    return name


def _lower_act(node: onnx.NodeProto, attrs: dict, inits: list) -> tuple[list, dict]:
    qmin, qmax, bits, zero = attrs["qmin"], attrs["qmax"], attrs["bits"], attrs["zero"]
    kind = container(qmin, qmax, bits)
    base = _unique(f"{_site(attrs)}.act", inits)  # a shared quantizer (q, k, v) is applied at several places
    s, z = f"{base}.scale", f"{base}.zero_point"
    inits += [
        numpy_helper.from_array(np.array(attrs["scale"], np.float32), s),
        _tensor(z, kind, np.array(zero)),
    ]
    q = f"{base}.q"
    nodes = [helper.make_node("QuantizeLinear", [node.input[0], s, z], [q], name=f"{base}/QuantizeLinear")]
    _, lo, hi = CONTAINERS[kind]
    if (qmin, qmax) != (lo, hi):  # a narrow grid in a wider container: clamp the integers exactly
        inits += [
            _tensor(f"{base}.qmin", kind, np.array(qmin)),
            _tensor(f"{base}.qmax", kind, np.array(qmax)),
        ]
        nodes.append(
            helper.make_node("Clip", [q, f"{base}.qmin", f"{base}.qmax"], [f"{q}.clip"], name=f"{base}/Clip")
        )
        q = f"{q}.clip"
    nodes.append(
        helper.make_node("DequantizeLinear", [q, s, z], [node.output[0]], name=f"{base}/DequantizeLinear")
    )
    info = {
        "site": _site(attrs),
        "bits": bits,
        "qmin": qmin,
        "qmax": qmax,
        "container": kind,
        "clip": len(nodes) == 3,
    }
    return nodes, info


def _lower_weight(node: onnx.NodeProto, attrs: dict, inits: list) -> tuple[list, dict]:
    qmin, qmax, bits = attrs["qmin"], attrs["qmax"], attrs["bits"]
    ints = numpy_helper.to_array(attrs["w"]).astype(np.int64)
    zero = numpy_helper.to_array(attrs["zero"]).astype(np.int64)
    shift = 2 ** (bits - 1) if qmin >= 0 else 0  # unsigned grid -> signed container, q - z unchanged
    kind = container(qmin - shift, qmax - shift, bits)
    base = f"{_site(attrs)}.weight"
    s, z, w = f"{base}.scale", f"{base}.zero_point", f"{base}.int"
    scale = numpy_helper.to_array(attrs["scale"]).astype(np.float32)
    inits += [
        _tensor(w, kind, ints - shift),
        numpy_helper.from_array(scale, s),
        _tensor(z, kind, zero - shift),
    ]
    dq = helper.make_node(
        "DequantizeLinear", [w, s, z], [node.output[0]], name=f"{base}/DequantizeLinear", axis=0
    )
    info = {"site": _site(attrs), "bits": bits, "qmin": qmin, "qmax": qmax, "container": kind, "shift": shift}
    return [dq], info


def lower(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """Replace every ``genqlib::`` node of ``model`` (in place) by standard QDQ nodes; set opset 21.

    Returns ``{"acts": [...], "weights": [...]}``, one dict per quantizer lowered (site, bits, container).
    """
    graph = model.graph
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    found: dict[str, list[dict]] = {"acts": [], "weights": []}
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        attrs = _attrs(node)
        if node.op_type == "ActQDQ":
            new, info = _lower_act(node, attrs, inits)
            found["acts"].append(info)
        elif node.op_type == "WeightDQ":
            new, info = _lower_weight(node, attrs, inits)
            found["weights"].append(info)
        else:
            raise ValueError(f"unknown genqlib node {node.op_type}")
        nodes.extend(new)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx", DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", OPSET), *opsets])
    return found


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in graph.node for out in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    for out in graph.output:
        readers.setdefault(out.name, []).append(None)
    return readers


def _init_map(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def _replace_init(graph: onnx.GraphProto, tensor: onnx.TensorProto) -> None:
    for i, t in enumerate(graph.initializer):
        if t.name == tensor.name:
            graph.initializer[i].CopyFrom(tensor)
            return
    graph.initializer.append(tensor)


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """``DQ(W, axis=0) -> Transpose(perm=[1, 0])`` becomes ``DQ(W^T, axis=1)`` (same values); returns how many."""
    graph = model.graph
    readers, inits, done = _consumers(graph), _init_map(graph), 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]:
        users = readers.get(dq.output[0], [])
        if len(users) != 1 or users[0] is None or users[0].op_type != "Transpose":
            continue
        tr = users[0]
        perm = _attrs(tr).get("perm")
        w = inits[dq.input[0]]
        if len(w.dims) != 2 or list(perm or [1, 0]) != [1, 0]:
            continue
        values = numpy_helper.to_array(w).astype(np.int64).T
        kind = {v[0]: k for k, v in CONTAINERS.items()}[w.data_type]
        _replace_init(graph, _tensor(w.name, kind, values))
        for a in dq.attribute:
            if a.name == "axis":
                a.i = 1
        dq.output[0] = tr.output[0]
        graph.node.remove(tr)
        done += 1
    return done


def quantize_biases(model: onnx.ModelProto) -> tuple[int, float]:
    """Conv/Gemm biases with a quantized input and weight -> int32 DQ at ``s_in * s_w`` (module docstring).

    Returns (number of biases converted, largest absolute change of a bias value). A bias whose integers
    would overflow int32 (a near-zero weight step) stays float.
    """
    graph = model.graph
    made, inits, worst, done = _producers(graph), _init_map(graph), 0.0, 0
    for node in [n for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) == 3]:
        x_dq, w_dq = made.get(node.input[0]), made.get(node.input[1])
        bias = inits.get(node.input[2])
        if bias is None or x_dq is None or w_dq is None:
            continue
        if x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue
        if node.op_type == "Gemm" and (
            _attrs(node).get("transB", 0) != 1 or _attrs(node).get("beta", 1.0) != 1.0
        ):
            continue
        s_in = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float64)
        s_w = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(bias).astype(np.float32)
        scale = (s_in * s_w).astype(np.float32)
        ints = np.round(b.astype(np.float64) / scale)
        if s_in.size != 1 or ints.shape != b.shape or np.abs(ints).max(initial=0) > INT32_MAX:
            continue
        worst = max(worst, float(np.abs(ints.astype(np.float32) * scale - b).max(initial=0.0)))
        base = bias.name
        graph.initializer.extend(
            [
                numpy_helper.from_array(ints.astype(np.int32), f"{base}.int32"),
                numpy_helper.from_array(scale, f"{base}.scale"),
                numpy_helper.from_array(np.zeros(b.shape, np.int32), f"{base}.zero_point"),
            ]
        )
        out = f"{base}.dequantized"
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}.int32", f"{base}.scale", f"{base}.zero_point"],
            [out],
            axis=0,
            name=f"{node.name}/bias/DequantizeLinear",
        )
        graph.node.insert(list(graph.node).index(node), dq)
        node.input[2] = out
        done += 1
    return done, worst


def drop_unused_initializers(model: onnx.ModelProto) -> int:
    """Remove initializers no node reads (the FP weights the integer ones replaced); returns how many."""
    graph = model.graph
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    dropped = len(graph.initializer) - len(keep)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return dropped
