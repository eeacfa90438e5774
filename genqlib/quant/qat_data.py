"""QAT's training data: the accepted forms (tensor, (images, labels), Split), the per-epoch order (a function
of (seed, epoch) only, so a resumed run replays it) and the fingerprint that refuses resuming on other data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def training_data(data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) from a tensor, an (images, labels) pair, or a Split-like ``.images/.labels``.

    Labels are class indices (N,) or soft targets (N, K) with non-negative rows (normalised to sum 1).
    """
    if isinstance(data, torch.Tensor):
        images, labels = data, None
    elif isinstance(getattr(data, "images", None), torch.Tensor):
        images, labels = data.images, getattr(data, "labels", None)
    elif isinstance(data, tuple | list) and len(data) == 2:
        images, labels = data
    else:
        raise TypeError(
            "data must be a tensor of images, an (images, labels) pair or a Split; for a SyntheticSet pass "
            f"(set.images(size, channels), set.labels or set.soft_labels()), got {type(data).__name__}"
        )
    if not isinstance(images, torch.Tensor) or len(images) == 0:
        raise ValueError("data holds no images: QAT needs a non-empty tensor of images")
    if labels is None:
        return images, None
    labels = torch.as_tensor(labels)
    if len(labels) != len(images) or labels.dim() not in (1, 2):
        raise ValueError(
            f"labels must have shape (N,) or (N, K) with N={len(images)}, got {tuple(labels.shape)}"
        )
    if labels.dim() == 2:
        labels = labels.float()
        if (labels < 0).any() or (labels.sum(1) <= 0).any():
            raise ValueError("soft labels must be non-negative with a positive sum in every row")
        labels = labels / labels.sum(1, keepdim=True)
    return images, labels.long() if labels.dim() == 1 else labels


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of one epoch: a function of (seed, epoch) only, so resuming replays it."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint64)
    gen = torch.Generator().manual_seed(int(state[0] % (2**63)))
    return torch.randperm(n, generator=gen)


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor | None) -> list:
    """Shape and float64 moments of the training data: resuming on other data is refused."""
    out: list = [list(images.shape)]
    for t in (images, labels):
        if t is not None:
            t = t.detach().double()
            out += [
                float(t.sum()),
                float(t.pow(2).sum()),
                float(t.flatten()[:: max(1, t.numel() // 997)].sum()),
            ]
    return out
