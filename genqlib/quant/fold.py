"""Fold BatchNorm into the convolution that feeds it, found by data flow and verified numerically.

Quantization must see the weights inference really uses, so every BatchNorm whose input is a conv's output
(and nothing else reads that output) is folded into the conv (BRECQ/QDrop ``fold_bn.py`` do this by module
adjacency; here the pairs come from the data flow, so attribute-style models such as ``transformers``' ResNet
fold too):

1. pairs from ``torch.fx`` when the model traces: a BatchNorm call whose argument is a conv call with no
   other user;
2. otherwise from a recorded forward pass: a BatchNorm whose input tensor *is* a conv's output tensor;
3. each fold rewrites the conv (float64 arithmetic) and replaces the BatchNorm by ``nn.Identity``; the
   folded model is compared with the original in eval mode on the example input; if it differs, the folds
   are retried one at a time and each one that changes the output is undone and reported.

The result says which BatchNorms were folded, which could not be and why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from genqlib.logits import logits
from genqlib.quant.inputs import Inputs, call

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FOLD_RTOL = 1e-4  # max |folded - original| over max |original| of the logits on the example input


@dataclass
class FoldResult:
    """Which BatchNorms were folded (BN path -> conv path) and which were left, with the reason."""

    folded: dict[str, str] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
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


def pairs_by_fx(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, BN path) pairs from a symbolic trace; raises when the model does not trace."""
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), CONVS)
            and len(src.users) == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


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
    try:
        pairs, result.found_by = pairs_by_fx(model), "torch.fx"
    except Exception:  # noqa: BLE001 - any trace failure means: use the recorded forward instead
        pairs, result.found_by = pairs_by_recording(model, example), "recorded forward"
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
            result.left[name] = "input is not the output of a convolution"
    return result
