"""Attach quantizers to any module without replacing it, so the module's own ``forward`` keeps running.

Why this mechanism: a look-alike class per layer type (QConv2d for nn.Conv2d, ...) re-implements each op and
silently skips subclasses with their own forward (timm's "same"-padding Conv2dSame, diffusers' LoRA convs,
nn.MultiheadAttention's out_proj). Instead:

- the weight is quantized by ``torch.nn.utils.parametrize``: ``layer.weight`` becomes
  ``WeightQuantizer(original)``, recomputed at each access, so whatever forward reads ``layer.weight``
  (F.conv2d with any padding, groups or dilation, a subclass's own padding, a functional call) computes with
  the quantized weight; the FP weight stays at ``layer.parametrizations.weight.original``;
- activations are quantized by hooks: a forward pre-hook quantizes a module's first positional input, a
  forward hook its output (the first tensor of a tuple output); the quantizers live in ``QuantModel.acts``.

Every conv (1d/2d/3d) and linear layer qualifies, subclasses included (``isinstance``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from genqlib.quant.quantizer import ActQuantizer, WeightQuantizer

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
INPUT, OUTPUT = "input", "output"  # the two sides of a module an activation quantizer can sit on


def is_quantizable(module: nn.Module) -> bool:
    """A conv or linear layer (subclasses too) with a weight tensor."""
    return isinstance(module, QUANTIZABLE) and isinstance(getattr(module, "weight", None), torch.Tensor)


def is_quantized(module: nn.Module) -> bool:
    """Whether ``attach_weight`` has run on ``module``."""
    return parametrize.is_parametrized(module, "weight") and isinstance(
        module.parametrizations.weight[0], WeightQuantizer
    )


def weight_quantizer(layer: nn.Module) -> WeightQuantizer:
    """The WeightQuantizer of a quantized layer."""
    return layer.parametrizations.weight[0]


def fp_weight(layer: nn.Module) -> nn.Parameter:
    """The full-precision (BN-folded) weight behind a quantized layer's ``weight``."""
    return layer.parametrizations.weight.original


def attach_weight(layer: nn.Module, bits: int) -> WeightQuantizer:
    """Quantize ``layer.weight`` per output channel from now on (step sizes by the Lp search)."""
    quantizer = WeightQuantizer(layer.weight.detach(), bits)
    parametrize.register_parametrization(layer, "weight", quantizer, unsafe=True)
    return quantizer


def _quantize_input(quantizer: ActQuantizer, module: nn.Module, args: tuple) -> tuple | None:
    if not quantizer.hooked or not args or not isinstance(args[0], torch.Tensor):
        return None
    return (quantizer(args[0]), *args[1:])


def _quantize_output(quantizer: ActQuantizer, module: nn.Module, args: tuple, out: Any) -> Any:
    if not quantizer.hooked:
        return None
    if isinstance(out, torch.Tensor):
        return quantizer(out)
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return (quantizer(out[0]), *out[1:])
    return None


def hook_act(module: nn.Module, where: str, quantizer: ActQuantizer) -> RemovableHandle:
    """Apply ``quantizer`` to ``module``'s input (``INPUT``) or output (``OUTPUT``) from now on.

    The quantizer is *not* registered inside ``module`` (an nn.Sequential would run it as a layer): the
    caller keeps it (``QuantModel.acts``); the hook holds a reference to it, so several modules may share one.
    """
    if where == INPUT:
        return module.register_forward_pre_hook(functools.partial(_quantize_input, quantizer))
    return module.register_forward_hook(functools.partial(_quantize_output, quantizer))


def site_key(path: str, where: str) -> str:
    """The name of an activation quantizer in ``QuantModel.acts``: module path and side, e.g. 'blocks/0:output'
    (a ModuleDict key may not hold dots)."""
    return f"{path.replace('.', '/')}:{where}"


def site_path(key: str) -> tuple[str, str]:
    """(module path, INPUT/OUTPUT) of a ``site_key``."""
    path, _, where = key.rpartition(":")
    return path.replace("/", "."), where
