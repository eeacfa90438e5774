"""``ReconConfig``: the reconstruction settings, with each method's reference values (``resolved``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

METHODS = ("brecq", "brecq_joint", "qdrop", "genie_m", "nearest")

# Per-method settings from the reference code (changed only by passing the field explicitly):
# BRECQ main_imagenet.py --lr 4e-4, the lr of its separate activation pass (LSQ on the steps alone);
# brecq_joint keeps it in its joint pass (genqlib's); QDrop exp/*/config.yaml scale_lr 4.0e-5; Genie
# reconstruct.py lr_a_scale=0.00004
LR_ACT = {"brecq": 4e-4, "brecq_joint": 4e-4, "qdrop": 4e-5, "genie_m": 4e-5}
REG_WEIGHT = {"brecq": 0.01, "brecq_joint": 0.01, "qdrop": 0.01, "genie_m": 1.0}  # BRECQ/QDrop --weight
# 0.01; Genie main.py round_weight=1.0 (for every model)
# MobileNetV2: 0.1, BRECQ README.md ("--arch mobilenetv2 ... --weight 0.1") and QDrop exp/w2a4/mbv2/config.yaml
# (recon.weight: 0.1, against 0.01 in exp/w2a4/r18); Genie keeps 1.0 for it (main.py has one round_weight)
ARCH_REG_WEIGHT = {"mobilenetv2": {"brecq": 0.1, "brecq_joint": 0.1, "qdrop": 0.1}}
# BRECQ main_imagenet.py: --iters_a 5000 activation-pass iterations against --iters_w 20000 weight-pass ones,
# and --p 2.4, the Lp norm of the activation pass's reconstruction loss (the weight pass uses p = 2)
ACT_ITERS_FRACTION = 0.25
ACT_LOSS_P = 2.4
PAPER_ITERS, SHORT_ITERS = 20_000, 1_000
PAPER_LR_ROUND, SHORT_LR_ROUND = 1e-3, 1e-2  # Adam's default (BRECQ/QDrop w_opt, Genie lr_bit) at 20k


def default_lr_round(iters: int) -> float:
    """AdaRound's lr for ``iters`` iterations: 1e-3 (the references, sized for 20,000) at 20,000 and more,
    1e-2 at 1,000 and fewer, log-linear between (genqlib's choice: at 1,000 iterations 1e-3 leaves the
    rounding undecided and costs about 0.8 pt on the mini teachers)."""
    if iters >= PAPER_ITERS:
        return PAPER_LR_ROUND
    if iters <= SHORT_ITERS:
        return SHORT_LR_ROUND
    t = math.log(iters / SHORT_ITERS) / math.log(PAPER_ITERS / SHORT_ITERS)
    return SHORT_LR_ROUND * (PAPER_LR_ROUND / SHORT_LR_ROUND) ** t


@dataclass(frozen=True)
class ReconConfig:
    """Reconstruction settings; defaults follow the paper setting (20,000 iterations per block, batch 32).

    ``brecq`` runs as BRECQ's ``main_imagenet.py`` does: a weight pass (AdaRound, activations FP, ``iters``
    per block), then an activation pass (the LSQ steps alone, ``act_iters`` per block, ``lr_act``);
    ``brecq_joint`` learns both in one pass per block (genqlib's former ``brecq``).

    ``lr_act``, ``reg_weight`` and ``lr_round`` left at None take the method's reference value
    (``LR_ACT``; ``REG_WEIGHT``, or ``ARCH_REG_WEIGHT`` for the model's architecture) and the iteration-count
    rule (``default_lr_round``); ``resolved(architecture)`` fills them (``reconstruct`` passes the quantized
    model's ``report.architecture``).
    """

    method: str = "brecq"
    iters: int = 20_000
    batch_size: int = 32
    lr_act: float | None = None
    lr_round: float | None = None
    lr_weight_step: float = 1e-4  # genie_m only (Genie reconstruct.py lr_w_scale)
    act_iters: int | None = None  # brecq only: its activation pass (None: iters * ACT_ITERS_FRACTION)
    reg_weight: float | None = None
    warmup: float = 0.2  # fraction of iterations without the regulariser (BRECQ/Genie)
    beta: tuple[float, float] = (20.0, 2.0)
    drop_prob: float = 0.5  # qdrop, genie_m (QDrop's prob and input_prob, Genie's 0.5)
    init_size: int = 256  # calibration images used to initialise activation step sizes
    max_cache_mb: float = 2048.0
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"ReconConfig.method must be one of {METHODS}, got {self.method!r}")
        checks = {
            "iters": self.iters >= 0,
            "act_iters": self.act_iters is None or self.act_iters >= 0,
            "batch_size": self.batch_size >= 1,
            "init_size": self.init_size >= 1,
            "drop_prob": 0.0 <= self.drop_prob <= 1.0,
            "warmup": 0.0 <= self.warmup < 1.0,
            "max_cache_mb": self.max_cache_mb >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ReconConfig.{name} out of range: {getattr(self, name)!r}")

    def resolved(self, architecture: str | None = None) -> ReconConfig:
        """This config with every None setting replaced by the method's value (for ``architecture``, e.g.
        ``"mobilenetv2"``, where the references use their own)."""
        reg = ARCH_REG_WEIGHT.get(architecture or "", {}).get(self.method, REG_WEIGHT.get(self.method, 0.0))
        return replace(
            self,
            lr_act=LR_ACT.get(self.method, 0.0) if self.lr_act is None else self.lr_act,
            reg_weight=reg if self.reg_weight is None else self.reg_weight,
            lr_round=default_lr_round(self.iters) if self.lr_round is None else self.lr_round,
            act_iters=(
                round(self.iters * ACT_ITERS_FRACTION)
                if self.act_iters is None and self.method == "brecq"
                else self.act_iters
            ),
        )

    def describe(self) -> str:
        """Which reconstruction ran, e.g. 'brecq: weights (1000 iters, FP activations), then activation steps
        (250 iters)': what a result row prints next to the quantizer settings."""
        if self.method == "nearest":
            return "nearest rounding, activation steps by the Lp search"
        if self.method == "brecq":
            act = self.act_iters if self.act_iters is not None else round(self.iters * ACT_ITERS_FRACTION)
            return f"brecq: weights ({self.iters} iters, FP activations), then activation steps ({act} iters)"
        return f"{self.method}: weights and activation steps jointly ({self.iters} iters)"

    @property
    def mixes_inputs(self) -> bool:
        """QDrop-style: mix FP and quantized block inputs and drop activation quantization at random."""
        return self.method in ("qdrop", "genie_m")
