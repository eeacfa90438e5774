"""Two image sizes a zero border apart: the rule that decides between padding / cropping and resizing.

The mini generator makes 32x32 images for 28x28 classifiers (Fashion-MNIST padded by 2 on each side in its
training); the store crops such images back and token inversion pads shots up, so both ask ``is_border``.
"""

from __future__ import annotations

import torch


def is_border(large: tuple[int, int], small: tuple[int, int]) -> bool:
    """Whether ``large`` (H, W) is ``small`` plus an even border of at most an eighth of the side: the case
    where the two sizes are a zero-pad / centre-crop apart rather than a resize."""
    dh, dw = large[0] - small[0], large[1] - small[1]
    return 0 <= dh <= large[0] // 8 and 0 <= dw <= large[1] // 8 and dh % 2 == 0 and dw % 2 == 0


def crop_border(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centred ``size`` (H, W) window of ``x`` (..., H', W'): undoes a zero border added around it."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]].contiguous()
