"""Running a classifier for its answers: ``eval_mode`` (every module in eval mode, each restored after) and
``predictions`` (arg-max classes in batches). The metrics and the filters both build on these, so they live
below both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from genqlib.logits import logits


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode inside the block, then each back in its own mode: a model whose
    parts are in different modes (a frozen BatchNorm backbone under a training head) keeps them, which
    ``model.train(was_training)`` would not (it sets every child to the parent's mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """Arg-max class of ``model`` for each image, in eval mode and batches, on the model's device (CPU out).

    Batches of 100: on the CPU a batch-500 pass of the mini MobileNet took 2.8x as long per image (its
    activations leave the cache); the logits are the same to the bit at either size. Parametrized (quantized)
    weights are computed once for all batches (``parametrize.cached``), not once per batch."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with eval_mode(model), parametrize.cached():
        return torch.cat(
            [
                logits(model(images[i : i + batch_size].to(device))).argmax(1).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )
