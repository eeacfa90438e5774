"""GenQuantConfig: how to quantize a generator, with QuEST's settings and genqlib's choices where the paper
summary leaves them open (why each default is what it is: see the package docstring, ``genqlib.quest``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from genqlib.quant import QuantConfig

METHODS = ("ptq", "quest")
WIDTHS = ((8, 8), (4, 8), (4, 4))  # QuEST's W8A8, W4A8 and W4A4 settings
QUEST_ONLY = ("n_groups", "iters_time", "iters_attn", "lr", "batch_size", "align_weight")


@dataclass(frozen=True)
class GenQuantConfig:
    """How to quantize a generator. The field order is part of the cache key of a built generator
    (``build_generator`` hashes ``asdict``): append new fields, never reorder."""

    w_bits: int = 4
    a_bits: int = 8
    method: str = "ptq"  # "ptq" | "quest"
    text_encoder: bool = (
        False  # also quantize the text encoder (same widths, calibrated on the class prompts)
    )
    calib_per_class: int = 8  # trajectories per class recorded from the FP pipeline
    calib_rows: int = 1024  # UNet calls (rows) kept for calibration and finetuning
    ptq_recon: str = "nearest"  # "nearest" (plain calibration) or "brecq" (short block reconstruction)
    recon_iters: int = 100  # per block, ptq_recon="brecq" only
    n_groups: int = 4  # quest: timestep groups of the time-aware activation quantizer
    iters_time: int = 200  # quest stage 1: time-embedding layers
    iters_attn: int = 200  # quest stage 2: attention layers
    lr: float = 1e-4  # quest: Adam, cosine decay per stage
    batch_size: int = 32  # quest: rows of one timestep group per finetuning step
    align_weight: float = 1.0  # quest: weight of the layer-alignment loss against the task loss
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"GenQuantConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.ptq_recon not in ("nearest", "brecq"):
            raise ValueError(f"GenQuantConfig.ptq_recon must be 'nearest' or 'brecq', got {self.ptq_recon!r}")
        if self.n_groups < 1 or self.calib_rows < 2 or self.batch_size < 1:
            raise ValueError(
                "GenQuantConfig: n_groups >= 1, calib_rows >= 2 and batch_size >= 1 are required"
            )
        self.quant_config()  # checks the widths

    @property
    def tag(self) -> str:
        """Short name of the method and widths, e.g. ``quest-W4A8`` (``-te`` with the text encoder)."""
        return f"{self.method}-W{self.w_bits}A{self.a_bits}" + ("-te" if self.text_encoder else "")

    def quant_config(self) -> QuantConfig:
        """The quantizer settings of the UNet and the text encoder: ``QuantConfig``'s defaults at these widths
        (first and last layer at 8 bits, per-channel weights, per-tensor activations)."""
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits)

    def record(self) -> dict:
        """What the manifest stores: the settings, without the ones the chosen method does not use."""
        out = asdict(self)
        unused = QUEST_ONLY if self.method == "ptq" else ()
        unused += ("recon_iters",) if self.ptq_recon == "nearest" else ()
        for name in unused:
            out.pop(name)
        return out
