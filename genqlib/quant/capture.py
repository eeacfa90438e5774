"""What one reconstruction step feeds a block: its cached inputs and FP outputs (``BlockInputs``, ``capture``),
the input mix of each method (``block_input``) and the loss (``recon_loss``, ``block_loss``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.inputs import call, n_rows, rows
from genqlib.quant.quantizer import ActQuantizer, random_select
from genqlib.quant.recon_config import ReconConfig

CAPTURE_BATCH = 256  # images per forward pass while filling the caches


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the block of interest has been seen."""


def first_tensor(out: Any) -> torch.Tensor:
    """A block's main output: the tensor itself, or the first item of a tuple (transformers layers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def recon_loss(out: torch.Tensor, target: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """|error|^p (squared by default) summed over the feature dim (1, or -1 for tokens), averaged over the rest
    (BRECQ ``lp_loss``)."""
    err = (out - target).pow(2) if p == 2.0 else (out - target).abs().pow(p)
    return err.sum(-1 if out.dim() == 3 else 1).mean()


class BlockInputs:
    """What a block is called with: its first positional tensor cached by rows (``x``), every other argument
    either cached by rows too (a tensor with the batch as first dim) or kept from the first call."""

    def __init__(self, budget: ByteBudget, folder: str, name: str) -> None:
        self.budget, self.folder, self.name = budget, folder, name
        self.x = TensorCache(budget, folder, f"{name}_x")
        self.args: list = []
        self.kwargs: dict = {}
        self.started = False

    def _slot(self, value: Any, batch: int, key: str) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == batch:
            cache = TensorCache(self.budget, self.folder, f"{self.name}_{key}")
            cache.append(value)
            return cache
        return value

    def append(self, args: tuple, kwargs: dict) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError("reconstruction blocks must take a tensor as their first positional argument")
        batch = len(args[0])
        self.x.append(args[0])
        if not self.started:
            self.started = True
            self.args = [self._slot(a, batch, f"a{i}") for i, a in enumerate(args[1:])]
            self.kwargs = {k: self._slot(v, batch, k) for k, v in kwargs.items()}
            return
        for slot, value in zip(self.args, args[1:], strict=False):
            if isinstance(slot, TensorCache):
                slot.append(value)
        for k, slot in self.kwargs.items():
            if isinstance(slot, TensorCache):
                slot.append(kwargs[k])

    def __len__(self) -> int:
        return len(self.x)

    def extra(self, idx: torch.Tensor, device: torch.device) -> tuple[list, dict]:
        """The other arguments for rows ``idx``."""

        def pick(slot):
            return slot[idx].to(device) if isinstance(slot, TensorCache) else slot

        return [pick(a) for a in self.args], {k: pick(v) for k, v in self.kwargs.items()}

    @property
    def spilled(self) -> int:
        slots = [self.x, *self.args, *self.kwargs.values()]
        return sum(c.spilled for c in slots if isinstance(c, TensorCache))


@torch.no_grad()
def capture(
    model: nn.Module,
    block: nn.Module,
    images: torch.Tensor,
    inputs: BlockInputs | None,
    outputs: TensorCache | None,
) -> None:
    """Run ``model`` over ``images`` and cache ``block``'s inputs (before any quantizer of the block's own
    runs) and/or its main output, stopping each pass there."""
    device = next(model.parameters()).device

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if inputs is not None:
            inputs.append(args, kwargs)
        if outputs is None:
            raise _Stop

    def hook(module: nn.Module, args: tuple, out: Any) -> None:
        outputs.append(first_tensor(out))
        raise _Stop

    handles = [block.register_forward_pre_hook(pre_hook, prepend=True, with_kwargs=True)]
    if outputs is not None:
        handles.append(block.register_forward_hook(hook))
    try:
        for i in range(0, n_rows(images), CAPTURE_BATCH):
            with contextlib.suppress(_Stop):
                call(model, rows(images, i, i + CAPTURE_BATCH, device))
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def input_bypassed(quantizer: ActQuantizer | None) -> Iterator[ActQuantizer | None]:
    """Inside: the hook that applies a block's own input quantizer passes tensors through (yielded, so the
    caller applies it itself)."""
    if quantizer is None:
        yield None
        return
    quantizer.hooked = False
    try:
        yield quantizer
    finally:
        quantizer.hooked = True


def block_input(
    cfg: ReconConfig, x_q: torch.Tensor, x_fp: torch.Tensor | None, quantizer: ActQuantizer | None
) -> torch.Tensor:
    """The input one optimisation step feeds the block (its own input quantizer already bypassed):

    - brecq: the quantized model's input, quantized by the block's input quantizer if it has one;
    - qdrop: that, mixed elementwise 50/50 with the FP model's input (QDrop quant/block_recon.py:
      ``torch.where(rand < input_prob, cur_inp, cur_sym)`` on the *quantized* input);
    - genie_m: the quantized model's input mixed 50/50 with the FP input *before* the block's input quantizer,
      which then quantizes and drops again (Genie reconstruct.py ``x_mix``, then QuantizableLayer).
    """
    if cfg.method == "genie_m":
        x = random_select(cfg.drop_prob, x_q, x_fp)
        return quantizer(x) if quantizer is not None else x
    if quantizer is not None:
        drop, quantizer.drop_prob = quantizer.drop_prob, 0.0
        x_q = quantizer(x_q)
        quantizer.drop_prob = drop
    return random_select(cfg.drop_prob, x_q, x_fp) if cfg.method == "qdrop" else x_q


@torch.no_grad()
def block_loss(block: nn.Module, x: BlockInputs, y: TensorCache, rows: torch.Tensor, p: float = 2.0) -> float:
    """Mean reconstruction loss (``recon_loss`` with ``p``) of ``block`` on cached rows (no dropping)."""
    device = next(block.parameters()).device
    losses = []
    for idx in rows.split(CAPTURE_BATCH):
        args, kwargs = x.extra(idx, device)
        out = first_tensor(block(x.x[idx].to(device), *args, **kwargs))
        losses.append(recon_loss(out, y[idx].to(device), p).item() * len(idx))
    return sum(losses) / len(rows)
