"""Test inputs shared by the quantization tests: real-looking images, not white noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Low-frequency colour fields in [0, 1]: ``n`` images of ``channels`` x ``size`` x ``size``."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
