"""The one way genqlib reads a classifier's logits, whatever its forward returns.

Models a researcher brings return a tensor (torch, timm, the mini teachers), an object with ``.logits``
(``transformers``' ``ImageClassifierOutput``), a dict with a ``"logits"`` key, or a tuple whose first item is
the logits. ``logits(output)`` maps each of these to the (N, K) tensor; ``quantize``, ``reconstruct``,
``qat``, ``evaluate`` and the filters all read model outputs through it, so a model works everywhere or
fails with the same clear message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def logits(output: Any) -> torch.Tensor:
    """The logits tensor in a model's ``output`` (tensor, ``.logits``, ``{"logits": ...}`` or tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    found = getattr(output, "logits", None)
    if found is None and isinstance(output, Mapping):
        found = output.get("logits")
    if found is None and isinstance(output, (tuple, list)) and output:
        found = output[0]
    if not isinstance(found, torch.Tensor):
        raise TypeError(
            f"cannot find logits in a model output of type {type(output).__name__}: genqlib reads a tensor, "
            "an object with .logits, a dict with 'logits', or a tuple whose first item is the logits"
        )
    return found


class Logits(nn.Module):
    """Wraps any classifier so that its forward returns the logits tensor (see ``logits``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits(self.model(x))
