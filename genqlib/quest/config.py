"""GenQuantConfig: how to quantize a generator, with QuEST's settings and genqlib's choices where the paper
summary leaves them open (why each default is what it is: see the package docstring, ``genqlib.quest``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from genqlib.quant import QuantConfig

METHODS = ("ptq", "quest")
WIDTHS = ((8, 8), (4, 8), (4, 4))  # QuEST's W8A8, W4A8 and W4A4 settings
QUEST_ONLY = ("quest_recon_iters", "quest_recon_batch", "quest_recon_rows", "max_steps", "sm_bits")
# QuEST's reference settings (hatchetProject/QuEST): txt2img.py --cali_iters default 20000 and
# batch_size=int(opt.cali_batch_size / 2) with the README's SD command's --cali_batch_size 8
QUEST_RECON_ITERS, QUEST_RECON_BATCH = 20_000, 4
QUEST_SM_BITS = 16  # README.md Stable Diffusion command: --sm_abit 16

# Where genqlib's quest differs from hatchetProject/QuEST's Stable Diffusion run (txt2img.py, README's command,
# qdiff/), each named where it is made; the comparison's record carries this list.
DEVIATIONS = (
    "cost: AdaRound reconstruction runs fewer iterations per block than the reference's 20,000, on a subset of "
    "the calibration rows (quest_recon_iters, quest_recon_rows in the record)",
    "cost: each finetuning stage runs at most max_steps optimizer steps, the reference's schedule scaled down "
    "(stage 1: every timestep's count; stage 2: epochs, then steps per visit), each timestep at least one",
    "the SD command's --running_stat (momentum min/max of the first timestep's grid) is not run",
    "QDiff's shortcut split (--split) is not reproduced: one quantizer per concatenated input",
    "the latents entering conv_in stay FP (the reference quantizes conv_in's input at 8 bits)",
    "the percentile initialisation scores the grid the forward applies (the reference's search clamps before "
    "adding the zero point)",
    "weight grids: genqlib's per-channel asymmetric Lp search (100 ratios, p=2.4) against the reference's 80",
    "AdaRound's lr follows genqlib's iteration rule (1e-2 at 1,000 iterations and fewer) against Adam's 1e-3",
    "rows of one finetuning step run as one batch (the reference runs them one at a time and accumulates)",
)


@dataclass(frozen=True)
class GenQuantConfig:
    """How to quantize a generator. The field order is part of the cache key of a built generator
    (``build_generator`` hashes ``asdict``)."""

    w_bits: int = 4
    a_bits: int = 8
    method: str = "ptq"  # "ptq" | "quest"
    text_encoder: bool = (
        False  # also quantize the text encoder (same widths, calibrated on the class prompts)
    )
    calib_per_class: int = 8  # trajectories per class recorded from the FP pipeline
    calib_rows: int = 1024  # UNet calls (rows) kept for calibration and finetuning
    ptq_recon: str = "nearest"  # ptq: "nearest" (plain calibration) or "brecq" (short block reconstruction)
    recon_iters: int = 100  # per block, ptq_recon="brecq" only
    quest_recon_iters: int = QUEST_RECON_ITERS  # quest: AdaRound iterations per block (weights, FP acts)
    quest_recon_batch: int = QUEST_RECON_BATCH  # quest: rows per AdaRound iteration
    quest_recon_rows: int | None = None  # quest: calibration rows the reconstruction uses (None: all of them)
    max_steps: int | None = (
        None  # quest: optimizer steps per finetuning stage at most (None: the reference's)
    )
    sm_bits: int = QUEST_SM_BITS  # quest: softmax-output width
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"GenQuantConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.ptq_recon not in ("nearest", "brecq"):
            raise ValueError(f"GenQuantConfig.ptq_recon must be 'nearest' or 'brecq', got {self.ptq_recon!r}")
        if (
            self.calib_rows < 2
            or self.quest_recon_batch < 1
            or (self.max_steps is not None and self.max_steps < 1)
        ):
            raise ValueError(
                "GenQuantConfig: calib_rows >= 2, quest_recon_batch >= 1 and max_steps >= 1 required"
            )
        self.quant_config()  # checks the widths

    @property
    def tag(self) -> str:
        """Short name of the method and widths, e.g. ``quest-W4A8`` (``-te`` with the text encoder)."""
        return f"{self.method}-W{self.w_bits}A{self.a_bits}" + ("-te" if self.text_encoder else "")

    @property
    def act_channel_wise(self) -> bool:
        """quest: activations per channel at 4 bits (txt2img.py: ``if opt.act_bit == 4:
        aq_params['channel_wise'] = True``), per tensor otherwise."""
        return self.a_bits == 4

    def quant_config(self) -> QuantConfig:
        """ptq (and the text encoder): ``QuantConfig``'s defaults at these widths (first and last layer at 8
        bits, per-channel weights, per-tensor activations)."""
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits)

    def weight_config(self) -> QuantConfig:
        """quest's weight quantization: every conv/linear weight at ``w_bits``, the first and last included
        (txt2img.py sets only the first and last layers' activation quantizers to 8 bits), activations left
        to the time-aware quantizers (``genqlib.quest.sites``)."""
        return QuantConfig(w_bits=self.w_bits, a_bits=None, first_last_bits=None)

    def record(self) -> dict:
        """What the manifest stores: the settings, without the ones the chosen method does not use."""
        out = asdict(self)
        unused = QUEST_ONLY if self.method == "ptq" else ("ptq_recon",)
        unused += ("recon_iters",) if self.method == "quest" or self.ptq_recon == "nearest" else ()
        for name in unused:
            out.pop(name)
        if self.method == "quest":
            out["act_channel_wise"] = self.act_channel_wise
        return out
