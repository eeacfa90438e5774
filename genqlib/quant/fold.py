"""Fold BatchNorm into the convolution that feeds it, found by data flow and verified numerically.

Quantization must see the weights inference really uses, so every BatchNorm whose input is a conv's output
(and nothing else reads that output) is folded into the conv (BRECQ/QDrop ``fold_bn.py`` do this by module
adjacency; here the pairs come from the data flow, so attribute-style models such as ``transformers``' ResNet
fold too):

1. pairs from ``torch.fx`` when the model traces: a BatchNorm call whose argument is a conv call with no
   other user; every conv and BatchNorm module, subclasses included, is a leaf of the trace (fx would
   otherwise trace *through* a subclass with its own ``forward``, such as a "same"-padding Conv2d, and see a
   ``conv2d`` function call that no BatchNorm can fold into);
2. from a recorded forward pass: a BatchNorm whose input tensor *is* a conv's output tensor; used when the
   model does not trace, or when it pairs more BatchNorms than fx did;
3. each fold rewrites the conv (float64 arithmetic) and replaces the BatchNorm by ``nn.Identity``; the
   folded model is compared with the original in eval mode on the example input; if it differs, the folds
   are retried one at a time and each one that changes the output is undone and reported.

The result says which BatchNorms were folded, which could not be and why, and which of those that stay
unfolded follow a convolution (``FoldResult.after_conv``): ``quantize`` warns about each (raises with
``strict=True``), since quantizing a conv whose BatchNorm was not folded quantizes weights inference does not
use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from genqlib.logits import logits
from genqlib.quant.inputs import Inputs, call

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FOLD_RTOL = 1e-4  # max |folded - original| over max |original| of the logits on the example input


@dataclass
class FoldResult:
    """Which BatchNorms were folded (BN path -> conv path) and which were left, with the reason;
    ``after_conv``: those left although a convolution feeds them (each one a warning in ``quantize``)."""

    folded: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    after_conv: dict[str, str] = field(default_factory=dict)
    found_by: str = ""

    @property
    def total(self) -> int:
        return len(self.folded) + len(self.left)


@torch.no_grad()
def fold_into(conv: nn.Module, bn: nn.Module) -> None:
    """Rewrite ``conv`` in place so that conv(x) equals bn(conv(x)) in eval mode (computed in float64)."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(std)
    weight = conv.weight.double() * scale.view(-1, *[1] * (conv.weight.dim() - 1))
    conv.weight.copy_(weight.to(conv.weight.dtype))
    new_bias = ((bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype)
    conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)


def foldable(conv: nn.Module, bn: nn.Module) -> str | None:
    """Why ``bn`` cannot fold into ``conv`` (None when it can)."""
    if bn.running_mean is None or bn.running_var is None:
        return "no running statistics (track_running_stats=False)"
    if conv.out_channels != bn.num_features:
        return f"channel mismatch ({conv.out_channels} vs {bn.num_features})"
    if getattr(conv, "transposed", False):
        return "transposed convolution"
    return None


CONV_FUNCTIONS = frozenset({F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d})


class LeafTracer(fx.Tracer):
    """``torch.fx`` tracer that keeps every conv and BatchNorm module a leaf, subclasses with their own
    ``forward`` included (fx's default only keeps modules defined inside ``torch.nn`` whole)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, CONVS + BATCHNORMS) or super().is_leaf_module(m, module_qualified_name)


def pairs_by_fx(model: nn.Module) -> tuple[list[tuple[str, str]], set[str]]:
    """(conv path, BN path) pairs from a symbolic trace (``LeafTracer``), and every BN whose input is a conv's
    output in the graph (a conv module with other readers, or a functional ``conv2d`` call); raises when the
    model does not trace."""
    graph = LeafTracer().trace(model)
    modules = dict(model.named_modules())
    pairs, after_conv = [], set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node):
            continue
        if src.op == "call_module" and isinstance(modules.get(src.target), CONVS):
            after_conv.add(node.target)
            if len(src.users) == 1:
                pairs.append((src.target, node.target))
        elif src.op == "call_function" and src.target in CONV_FUNCTIONS:
            after_conv.add(node.target)
    return pairs, after_conv


def find_pairs(model: nn.Module, example: Inputs) -> tuple[list[tuple[str, str]], set[str], str]:
    """(conv, BN) pairs to fold, every BN a conv feeds, and how the pairs were found: ``torch.fx`` when the
    model traces and fx pairs at least as many BNs as the recorded forward does, else the recorded forward."""
    recorded = pairs_by_recording(model, example)
    after_conv = {bn for _, bn in recorded}
    try:
        traced, traced_after = pairs_by_fx(model)
    except Exception:  # noqa: BLE001 - any trace failure means: use the recorded forward instead
        return recorded, after_conv, "recorded forward"
    after_conv |= traced_after
    if len(traced) < len(recorded):
        return recorded, after_conv, f"recorded forward (torch.fx paired {len(traced)} of {len(recorded)})"
    return traced, after_conv, "torch.fx"


@torch.no_grad()
def pairs_by_recording(model: nn.Module, example: Inputs) -> list[tuple[str, str]]:
    """(conv path, BN path) pairs where the BN's input tensor is a conv's output tensor in one forward."""
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # keeps recorded tensors alive so their ids stay unique
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, CONVS):

            def conv_hook(mod, args, out, name=name):
                produced[id(out)] = name
                keep.append(out)

            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, BATCHNORMS):

            def bn_hook(mod, args, name=name):
                if args and id(args[0]) in produced:
                    pairs.append((produced[id(args[0])], name))

            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        call(model, example)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(pairs))


def _replace(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    parent, _, leaf = path.rpartition(".")
    owner = model.get_submodule(parent)
    old = owner._modules[leaf]
    owner._modules[leaf] = new
    return old


@torch.no_grad()
def _agrees(model: nn.Module, example: Inputs, reference: torch.Tensor) -> bool:
    out = logits(call(model, example)).float()
    scale = reference.abs().max().clamp(min=1e-6)
    return bool(torch.isfinite(out).all() and ((out - reference).abs().max() / scale) <= FOLD_RTOL)


@torch.no_grad()
def fold_bn(model: nn.Module, example: Inputs) -> FoldResult:
    """Fold every conv -> BatchNorm pair of ``model`` (eval mode) in place; see the module docstring."""
    model.eval()
    result = FoldResult()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, BATCHNORMS)}
    if not bns:
        return result
    pairs, after_conv, result.found_by = find_pairs(model, example)
    reference = logits(call(model, example)).float()
    pending = []
    for conv_name, bn_name in pairs:
        why = foldable(model.get_submodule(conv_name), bns[bn_name])
        if why:
            result.left[bn_name] = why
        else:
            pending.append((conv_name, bn_name))
    backup = {c: copy.deepcopy(model.get_submodule(c)) for c, _ in pending}

    def apply(conv_name: str, bn_name: str) -> None:
        fold_into(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _replace(model, bn_name, nn.Identity())

    def undo(conv_name: str, bn_name: str) -> None:
        _replace(model, conv_name, copy.deepcopy(backup[conv_name]))
        _replace(model, bn_name, bns[bn_name])

    for pair in pending:
        apply(*pair)
    if not _agrees(model, example, reference):  # find the folds that change the output, one at a time
        for pair in pending:
            undo(*pair)
        for pair in pending:
            apply(*pair)
            if not _agrees(model, example, reference):
                undo(*pair)
                result.left[pair[1]] = (
                    "folding changed the model's output (the conv output has other readers)"
                )
    for conv_name, bn_name in pending:
        if bn_name not in result.left:
            result.folded[bn_name] = conv_name
    for name in bns:
        if name not in result.folded and name not in result.left:
            result.left[name] = (
                "follows a convolution the fold cannot rewrite (a functional conv call, or a conv whose "
                "output has other readers)"
                if name in after_conv
                else "input is not the output of a convolution"
            )
    result.after_conv = {name: why for name, why in result.left.items() if name in after_conv}
    return result
