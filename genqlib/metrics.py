"""Evaluation metrics: top-1 accuracy and top-1 agreement with the full-precision model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from genqlib.fashion_mnist import Split
from genqlib.filters import bn_distance
from genqlib.inference import eval_mode, predictions

__all__ = ["class_fidelity", "eval_mode", "evaluate", "predictions", "set_bn_distance"]


def evaluate(
    model: nn.Module,
    test_split: Split,
    fp_model: nn.Module | None = None,
    batch_size: int = 100,
    fp_pred: torch.Tensor | None = None,
) -> dict:
    """``top1`` (percent) on ``test_split``; with ``fp_model`` (or its ``predictions`` already computed on
    ``test_split``, as ``fp_pred``, when many models are compared to one) also ``agreement``: percent of
    images where ``model``'s top-1 class equals the FP model's."""
    if len(test_split) == 0:
        raise ValueError("test_split is empty")
    if fp_pred is not None and fp_pred.shape != test_split.labels.shape:
        raise ValueError(f"fp_pred has shape {tuple(fp_pred.shape)}, test_split has {len(test_split)} images")
    pred = predictions(model, test_split.images, batch_size)
    result = {"top1": 100.0 * (pred == test_split.labels).float().mean().item(), "n": len(test_split)}
    if fp_pred is None and fp_model is not None:
        fp_pred = predictions(fp_model, test_split.images, batch_size)
    if fp_pred is not None:
        result["agreement"] = 100.0 * (pred == fp_pred).float().mean().item()
    return result


def class_fidelity(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None = None
) -> dict:
    """How often ``model`` predicts the prompted class: overall fraction and per class of ``classes`` (default:
    the classes in ``labels``, sorted), a synthetic set's check. ``classes`` is returned alongside."""
    hit = (predictions(model, images) == labels).float()
    classes = sorted(labels.unique().tolist()) if classes is None else [int(c) for c in classes]
    per_class = [hit[labels == c].mean().item() if (labels == c).any() else float("nan") for c in classes]
    return {
        "class_fidelity": hit.mean().item(),
        "class_fidelity_per_class": per_class,
        "classes": classes,
        "n": len(labels),
    }


def set_bn_distance(model: nn.Module, images: torch.Tensor, batch_size: int = 100, seed: int = 0) -> dict:
    """Mean and std over shuffled batches of the BN distance (paper eq. 6), as in the paper's Table 1b.

    Batches of one fixed size make sets of different sizes comparable (the distance shrinks with batch size).
    """
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_batches = len(images) // batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the set ({len(images)} images)")
    values = torch.tensor(
        [bn_distance(model, images[order[i * batch_size : (i + 1) * batch_size]]) for i in range(n_batches)]
    )
    std = values.std().item() if n_batches > 1 else 0.0
    return {"mean": values.mean().item(), "std": std, "batches": n_batches, "batch_size": batch_size}
