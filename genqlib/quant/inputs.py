"""Model inputs as genqlib's engine passes them: one batch tensor (images), or a tuple of batch-first tensors
for models that take several (a diffusion UNet's latents, timesteps and text embeddings).

Every place that runs a model on calibration or example data goes through ``call`` and ``rows``, so
``quantize`` and ``reconstruct`` work on classifiers and on generators alike.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import torch
from torch import nn

Inputs: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]


def as_args(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """The positional arguments ``inputs`` stands for."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def check_inputs(inputs: Any, name: str) -> Inputs:
    """``inputs`` if it is a batch tensor or a tuple of batch-first tensors of one length; else a clear error."""
    args = as_args(inputs)
    if not args or not all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in args):
        raise TypeError(
            f"{name} must be a batch tensor (N, ...) or a tuple of them, got {type(inputs).__name__}"
        )
    if len({len(a) for a in args}) != 1:
        raise ValueError(
            f"{name}: the tensors of a tuple must share their batch size, got {[len(a) for a in args]}"
        )
    return inputs


def n_rows(inputs: Inputs) -> int:
    return len(as_args(inputs)[0])


def rows(inputs: Inputs, start: int, stop: int, device: torch.device | None = None) -> Inputs:
    """Rows ``start:stop`` of every tensor, moved to ``device``."""
    out = tuple(a[start:stop].to(device) if device is not None else a[start:stop] for a in as_args(inputs))
    return out if isinstance(inputs, tuple) else out[0]


def call(model: nn.Module, inputs: Inputs) -> Any:
    return model(*as_args(inputs))


def device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device
