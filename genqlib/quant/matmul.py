"""Quantize the inputs of matmuls between two activations: attention's q @ k^T and softmax @ v.

PTQ4ViT (``quant_layers/matmul.py``) and RepQ-ViT quantize both inputs of each attention matmul (q, k, the
softmax output, v); conv/linear hooks never see them, and a model may compute attention in one call to
``F.scaled_dot_product_attention`` or inside ``nn.MultiheadAttention``. So, at run time:

- one ``torch.overrides.TorchFunctionMode`` (``MatmulQuant``) is active only while a module that computes such
  a matmul runs (an *owner*: the innermost module running at the call, found by one recorded pass in
  ``discover``; a forward pre-hook enters it and a forward hook leaves it);
- each ``torch.matmul``/``@``/``bmm``/``baddbmm`` whose two operands are activations (no ``nn.Parameter``)
  quantizes both with its own per-tensor ``ActQuantizer`` (the k-th such call in the owner's forward uses the
  k-th pair); ``F.scaled_dot_product_attention`` is computed as PyTorch documents it (q @ k^T * scale + mask,
  softmax, dropout, @ v) with q, k, the softmax output and v quantized; ``F.multi_head_attention_forward``
  (``nn.MultiheadAttention``) runs with ``torch.bmm``, ``torch.baddbmm`` and SDPA swapped for these quantizing
  versions for the length of the call.

Deviation: the softmax output is quantized on the uniform grid of every other activation (PTQ4ViT uses twin
uniform grids, RepQ-ViT a log2 grid). Anything else that multiplies two activations (``einsum``, a fused
attention kernel) is counted as left FP and reported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from genqlib.quant.inputs import Inputs, call
from genqlib.quant.quantizer import ActQuantizer

SDPA = F.scaled_dot_product_attention
MHA_FORWARD = F.multi_head_attention_forward
MATMULS = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm})
BADDBMMS = frozenset({torch.baddbmm, torch.Tensor.baddbmm})
UNSEEN = frozenset({torch.einsum, torch._native_multi_head_attention})  # two-activation products not handled


def is_activation(x: object) -> bool:
    return isinstance(x, torch.Tensor) and not isinstance(x, nn.Parameter)


def sdpa_reference(
    q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, mm=None
):
    """``F.scaled_dot_product_attention`` as its documentation spells it out, with ``mm(a, b, slot)`` for the
    two matmuls (slot 0: q @ k^T, slot 1: softmax @ v)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    if enable_gqa:
        k = k.repeat_interleave(q.size(-3) // k.size(-3), -3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), -3)
    scores = mm(q, k.transpose(-2, -1), 0) * scale
    if is_causal:
        keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = (
            scores.masked_fill(~attn_mask, float("-inf"))
            if attn_mask.dtype == torch.bool
            else scores + attn_mask
        )
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p, training=True)
    return mm(probs, v, 1)


class Owner:
    """The matmul quantizers of one module: pair k quantizes the operands of its k-th two-activation matmul."""

    def __init__(self, pairs: list[tuple[ActQuantizer, ActQuantizer]]) -> None:
        self.pairs = pairs
        self.calls = 0
        self.unquantized = 0  # matmuls beyond the discovered ones (left FP, counted)

    @property
    def enabled(self) -> bool:
        return any(q.enabled for pair in self.pairs for q in pair)

    def quantize(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, self.calls = self.calls, self.calls + 1
        if k >= len(self.pairs):
            self.unquantized += 1
            return a, b
        qa, qb = self.pairs[k]
        return qa(a), qb(b)


class MatmulQuant(TorchFunctionMode):
    """The mode: applies the innermost running owner's quantizers (``owners`` is a stack), or with
    ``record`` set, only counts two-activation matmuls per owner path (``discover``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[Owner | str] = []
        self.record: dict[str, int] | None = None
        self.unseen: dict[str, int] = {}

    def mm(self, a: torch.Tensor, b: torch.Tensor, fn: Callable = torch.matmul) -> torch.Tensor:
        top = self.stack[-1]
        if isinstance(top, str):
            self.record[top] = self.record.get(top, 0) + 1
            return fn(a, b)
        a, b = top.quantize(a, b)
        return fn(a, b)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.stack or (isinstance(self.stack[-1], Owner) and not self.stack[-1].enabled):
            return func(*args, **kwargs)  # quantizers off: the model's own computation, to the bit
        if func is SDPA:
            return sdpa_reference(*args, **kwargs, mm=lambda a, b, slot: self.mm(a, b))
        if func in MATMULS and len(args) == 2 and all(is_activation(a) for a in args):
            return self.mm(args[0], args[1], func)
        if func in BADDBMMS and len(args) >= 3 and all(is_activation(a) for a in args[1:3]):
            a, b = args[1], args[2]
            return self.mm(a, b, lambda x, y: func(args[0], x, y, *args[3:], **kwargs))
        if func is MHA_FORWARD:
            return self.multi_head_attention(func, args, kwargs)
        if func in UNSEEN:
            top = self.stack[-1]
            name = top if isinstance(top, str) else "owner"
            self.unseen[name] = self.unseen.get(name, 0) + 1
        return func(*args, **kwargs)

    def multi_head_attention(self, func, args, kwargs):
        """``F.multi_head_attention_forward`` with its bmm/baddbmm/SDPA calls going through ``mm``."""
        originals = {"bmm": torch.bmm, "baddbmm": torch.baddbmm}
        sdpa = F.scaled_dot_product_attention
        with ExitStack() as stack:
            torch.bmm = lambda a, b, **kw: self.mm(a, b, lambda x, y: originals["bmm"](x, y, **kw))
            torch.baddbmm = lambda inp, a, b, **kw: self.mm(
                a, b, lambda x, y: originals["baddbmm"](inp, x, y, **kw)
            )
            F.scaled_dot_product_attention = lambda *a, **kw: sdpa_reference(
                *a, **kw, mm=lambda x, y, s: self.mm(x, y)
            )
            stack.callback(setattr, torch, "bmm", originals["bmm"])
            stack.callback(setattr, torch, "baddbmm", originals["baddbmm"])
            stack.callback(setattr, F, "scaled_dot_product_attention", sdpa)
            return func(*args, **kwargs)


MODE = MatmulQuant()


def enter(owner: Owner | str, *_: object) -> None:
    """Make ``owner`` the innermost running owner (entering the mode with the first one)."""
    if isinstance(owner, Owner):
        owner.calls = 0
    MODE.stack.append(owner)
    if len(MODE.stack) == 1:
        MODE.__enter__()


def leave(*_: object) -> None:
    MODE.stack.pop()
    if not MODE.stack:
        MODE.__exit__(None, None, None)


@torch.no_grad()
def discover(model: nn.Module, example: Inputs) -> tuple[dict[str, int], dict[str, int]]:
    """({owner path: number of two-activation matmuls per forward}, {path: products left FP}) from one pass."""
    MODE.record, MODE.unseen = {}, {}
    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(functools.partial(enter, name)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        call(model, example)
    finally:
        for h in handles:
            h.remove()
        found, unseen = MODE.record, MODE.unseen
        MODE.record, MODE.unseen = None, {}
    return found, unseen


def attach(model: nn.Module, path: str, pairs: list[tuple[ActQuantizer, ActQuantizer]]) -> Owner:
    """Quantize the operands of the two-activation matmuls of module ``path`` with ``pairs`` from now on."""
    owner = Owner(pairs)
    module = model.get_submodule(path)
    module.register_forward_pre_hook(functools.partial(enter, owner))  # a partial: deepcopy copies the owner
    module.register_forward_hook(leave, always_call=True)
    return owner
