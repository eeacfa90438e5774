"""Measure a teacher's top-1 on the full test set: ``python -m genqlib.zoo.evaluate NAME``.

The last line printed is ``NAME top1=<percent>``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from genqlib.fashion_mnist import Split, load_fashion_mnist
from genqlib.logits import logits

CARD_SUBSET_SIZE = 2000
CARD_SUBSET_SEED = 0


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Arg-max class of ``model`` for each image, in batches."""
    return torch.cat(
        [logits(model(images[i : i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    )


def top1(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of ``model`` on ``split``, in percent."""
    model.eval()
    return 100.0 * (predict(model, split.images) == split.labels).float().mean().item()


def main() -> None:
    from genqlib.zoo import load_teacher

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    args = parser.parse_args()
    print(f"{args.name} top1={top1(load_teacher(args.name), load_fashion_mnist('test')):.2f}")


if __name__ == "__main__":
    main()
