"""How each QAT method trains, as its paper runs it: one frozen ``Recipe`` per ``QATConfig.mode``.

``RECIPES["lsq"]``: Esser et al., "Learned Step Size Quantization", ICLR 2020 (arXiv 1902.08153), section 3
("Experiments") and 3.1 ("Weight decay"): SGD with momentum 0.9, cosine learning-rate decay without restarts,
initial lr 0.01 for 2-, 3- and 4-bit networks (0.1 is their full-precision lr, 0.001 their 8-bit one), weight
decay 1e-4 (ResNet-18's) halved for 3-bit and quartered for 2-bit networks (their Table 2 sweep), BatchNorm
layers kept and trained (the paper's networks are pre-activation ResNets and VGG with BN, fine-tuned as they
are; nothing is folded), first and last layer at 8 bits (``QuantConfig.first_last_bits``).

``RECIPES["genq"]``: GenQ's QAT (paper section 5.3): SGD with momentum, lr 1e-3 with cosine decay, no weight
decay; it starts from a BN-folded PTQ model, so there is no BatchNorm to train (``frozen``).

What stays the caller's for both: the epochs (LSQ: 90; a profile's ``qat_epochs`` in the mini world), the batch
size (the profile's reconstruction batch), the loss (``QATConfig.loss``). What genqlib's LSQ changes on purpose
is listed in ``LSQ_DEVIATIONS`` (docs/QUANTIZATION.md and notebook 05 print the same list).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine",)
BATCHNORM = ("frozen", "train")


@dataclass(frozen=True)
class Recipe:
    """A QAT method's optimiser (SGD with ``momentum``), initial ``lr``, ``schedule``, ``weight_decay`` and
    BatchNorm handling. ``decay_by_bits``: (w_bits at or below, factor) pairs that scale the weight decay at low
    precision (LSQ section 3.1); ``weight_decay_at(w_bits)`` applies them. ``batchnorm``: ``train`` keeps the
    BatchNorms unfolded (``QuantConfig.fold_bn=False``) and trains in train mode (batch statistics, running
    statistics updated, affine parameters learned); ``frozen`` trains in eval mode (a BN-folded model)."""

    lr: float
    momentum: float
    weight_decay: float
    decay_by_bits: tuple[tuple[int, float], ...] = ()
    schedule: str = "cosine"
    batchnorm: str = "frozen"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Recipe.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.batchnorm not in BATCHNORM:
            raise ValueError(f"Recipe.batchnorm must be one of {BATCHNORM}, got {self.batchnorm!r}")
        ok = self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0
        if not (ok and all(math.isfinite(v) for v in (self.lr, self.momentum, self.weight_decay))):
            raise ValueError(f"Recipe values out of range: {self!r}")

    def weight_decay_at(self, w_bits: int) -> float:
        """The weight decay at ``w_bits`` (the smallest matching ``decay_by_bits`` threshold's factor)."""
        factors = [f for bits, f in sorted(self.decay_by_bits) if w_bits <= bits]
        return self.weight_decay * (factors[0] if factors else 1.0)


RECIPES = {
    # LSQ section 3: "SGD with a momentum of 0.9 ... cosine learning rate decay without restarts", initial lr
    # 0.01 for 2-, 3- and 4-bit networks; section 3.1 / Table 2: weight decay 1e-4 at 4 (and 8) bits, half at
    # 3 bits, a quarter at 2 bits (ResNet-18 sweep, used for every network after it); BN trained, not folded.
    "lsq": Recipe(
        lr=0.01, momentum=0.9, weight_decay=1e-4, decay_by_bits=((3, 0.5), (2, 0.25)), batchnorm="train"
    ),
    # GenQ section 5.3: lr 1e-3, cosine; no weight decay is stated; the PTQ start is BN-folded.
    "genq": Recipe(lr=1e-3, momentum=0.9, weight_decay=0.0, batchnorm="frozen"),
}

# Where genqlib's LSQ baseline departs from LSQ's paper, and why (printed in docs/QUANTIZATION.md and notebook 05).
LSQ_DEVIATIONS = (
    "epochs: the profile's qat_epochs (mini 5, ci 1) with the cosine over all of them, not LSQ's 90 ImageNet "
    "epochs; the data: as many real images as GenQ has synthetic ones, not the full training set",
    "batch: the profile's reconstruction batch, not LSQ's; lr 0.01 is kept as LSQ states it, not rescaled",
    "step sizes start at the Lp (p = 2.4) search of the PTQ engine (LSQ's own start was worse at 3 bits), per "
    "output channel on an asymmetric grid for weights, not LSQ's 2<|v|>/sqrt(Q_P) per layer on a symmetric "
    "one; the gradient scale g = 1/sqrt(N Q_P) is LSQ's with N = weights per channel",
    "weight decay only on conv/linear weights (not biases, BatchNorm affine or step sizes); LSQ does not say",
    "loss: the grid's (KL distillation from the FP model by default, as GenQ's QAT); LSQ's main results use "
    "cross-entropy, its distillation variant mixes cross-entropy and KL 1:1 at T = 1",
    "no data augmentation (LSQ: random 224 crop of 256 and horizontal flips); step sizes clamped positive",
)
