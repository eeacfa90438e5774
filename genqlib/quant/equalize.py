"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization through Weight Equalization and Bias
Correction", section 4.1): rescale consecutive layers so that per-channel weight ranges match, which makes
per-tensor and low-bit per-channel grids waste less.

For a layer pair ``A -> act -> B`` where ``act`` is positive-homogeneous (ReLU, identity: ``act(x / s) =
act(x) / s`` for s > 0) and A's output feeds only B, output channel i of A (weight and bias) is divided by
``s_i = sqrt(r_A,i / r_B,i)`` and input channel i of B multiplied by it (``r`` = max |weight| of the channel), so
both ranges become ``sqrt(r_A,i * r_B,i)`` and the model computes the same function. A depthwise conv is the
B of one pair and the A of the next (its channel i is both). Sweeps repeat until the scales settle.

Where the paper and genqlib differ, or it is silent:
- ReLU6 is not positive-homogeneous; the paper replaces it by ReLU before equalizing. genqlib does the same
  (``relu6="relu"``, reported per module) or leaves those pairs alone (``relu6="skip"``).
- Pairs come from ``torch.fx``; a model that does not trace is left as it is, and the result says so.
- Bias absorption (the paper's section 4.2) is not done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from genqlib.quant.layers import is_quantizable

HOMOGENEOUS = (nn.ReLU, nn.Identity, nn.LeakyReLU, nn.PReLU)
MAX_SWEEPS = 20
TOLERANCE = 1e-3  # stop when every scale of a sweep is within this of 1


@dataclass
class EqualizeResult:
    """The equalized layer pairs, the ReLU6 modules replaced by ReLU, sweeps run, and why nothing was done."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    relu6_replaced: list[str] = field(default_factory=list)
    sweeps: int = 0
    skipped: str = ""


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def find_pairs(model: nn.Module, relu6: str) -> tuple[list[tuple[str, str, str | None]], str]:
    """(A, B, ReLU6 module between them or None) for every equalizable pair; or why none could be found."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any trace failure: equalization is skipped and reported
        return [], f"the model does not trace with torch.fx ({type(err).__name__})"
    modules = dict(model.named_modules())

    def module_of(node: fx.Node | None) -> nn.Module | None:
        return modules[node.target] if node is not None and node.op == "call_module" else None

    pairs = []
    for node in graph.nodes:
        if not is_quantizable(module_of(node) or nn.Module()):
            continue
        nxt, between = _only_user(node), None
        while isinstance(module_of(nxt), (*HOMOGENEOUS, nn.ReLU6)):  # folded BNs are Identity on the way
            if isinstance(module_of(nxt), nn.ReLU6):
                if relu6 == "skip" or between:
                    break
                between = nxt.target
            nxt = _only_user(nxt)
        if is_quantizable(module_of(nxt) or nn.Module()):
            pairs.append((node.target, nxt.target, between))
    return pairs, ""


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _ranges(a: nn.Module, b: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel max |weight| of A's outputs and B's inputs, or None when the channels do not line up."""
    if _is_depthwise(b):
        r_b = b.weight.detach().abs().flatten(1).amax(1)
    elif getattr(b, "groups", 1) == 1:
        r_b = b.weight.detach().abs().transpose(0, 1).flatten(1).amax(1)
    else:
        return None
    r_a = a.weight.detach().abs().flatten(1).amax(1)
    return (r_a, r_b) if r_a.shape == r_b.shape else None


@torch.no_grad()
def _rescale(a: nn.Module, b: nn.Module, s: torch.Tensor) -> None:
    a.weight.div_(s.view(-1, *[1] * (a.weight.dim() - 1)))
    if a.bias is not None:
        a.bias.div_(s)
    if _is_depthwise(b):
        b.weight.mul_(s.view(-1, *[1] * (b.weight.dim() - 1)))
        if b.bias is not None:
            b.bias.mul_(s)
    else:
        b.weight.mul_(s.view(1, -1, *[1] * (b.weight.dim() - 2)))


def equalize(model: nn.Module, relu6: str = "relu") -> EqualizeResult:
    """Equalize ``model`` in place (see the module docstring)."""
    result = EqualizeResult()
    pairs, result.skipped = find_pairs(model, relu6)
    usable = []
    for a_name, b_name, between in pairs:
        a, b = model.get_submodule(a_name), model.get_submodule(b_name)
        if _ranges(a, b) is not None:
            usable.append((a, b))
            result.pairs.append((a_name, b_name))
            if between and between not in result.relu6_replaced:
                parent, _, leaf = between.rpartition(".")
                setattr(model.get_submodule(parent), leaf, nn.ReLU(inplace=False))
                result.relu6_replaced.append(between)
    for sweep in range(MAX_SWEEPS):
        result.sweeps = sweep + 1
        worst = 0.0
        for a, b in usable:
            r_a, r_b = _ranges(a, b)
            s = torch.where((r_a > 0) & (r_b > 0), (r_a / r_b).sqrt(), torch.ones_like(r_a))
            _rescale(a, b, s)
            worst = max(worst, (s - 1).abs().max().item())
        if worst < TOLERANCE:
            break
    return result
