"""Block-wise reconstruction (BRECQ, QDrop, Genie-M) of a QuantModel on calibration images.

For each block, in execution order: cache the FP model's input and output at that block (the target is
the FP block's output on the FP input) and the quantized model's input there (all earlier blocks already
reconstructed); calibrate the block's activation step sizes (Lp search) on that input; then minimise

    sum over features of (block(x) - y_fp)^2, averaged over the rest   +   reg_weight * AdaRound regulariser

with Adam on the rounding variables V (lr_round) and, when activations are quantized, on the LSQ
activation step sizes (lr_act, cosine decay); per-method defaults in ``LR_ACT``/``REG_WEIGHT``. Methods:

- ``brecq``: input = the quantized model's input; weights and activations learned jointly (BRECQ's code
  runs a weight pass then an activation pass; one joint pass is QDrop's and Genie's simplification).
- ``qdrop``: the *quantized* block input mixed 50/50 elementwise with the FP input, and each activation
  quantizer inside the block dropped (kept FP) elementwise with ``drop_prob`` (0.5) (QDrop
  ``quant/block_recon.py``, ``quant/quant_layer.py``).
- ``genie_m``: Genie's ``reconstruct.py``: the quantized model's input mixed with the FP input *before* the
  block's input quantizer, which then drops too; the weight step sizes learn jointly with the rounding
  (``lr_weight_step``), and Genie's rounding-loss weight (1.0).
- ``nearest``: step-size initialisation only (weights rounded to nearest), no optimisation.

Caches respect ``max_cache_mb`` by spilling to a temporary folder (see ``cache.py``); nothing is
recomputed. Seeded: the same inputs and config give the same model (global RNG state is left untouched).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genqlib.quant.adaround import beta_schedule
from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.inputs import Inputs, as_args, call, check_inputs, device_of, n_rows, rows
from genqlib.quant.layers import INPUT, fp_weight, is_quantized, weight_quantizer
from genqlib.quant.model import QuantModel, forward_order
from genqlib.quant.quantizer import ActQuantizer, calibrating, random_select

METHODS = ("brecq", "qdrop", "genie_m", "nearest")
CAPTURE_BATCH = 256  # images per forward pass while filling the caches

# Per-method settings from the reference code (changed only by passing the field explicitly):
LR_ACT = {"brecq": 4e-4, "qdrop": 4e-5, "genie_m": 4e-5}  # BRECQ main_imagenet.py --lr; QDrop
# quant/block_recon.py lr=4e-5; Genie reconstruct.py lr_a_scale=0.00004
REG_WEIGHT = {"brecq": 0.01, "qdrop": 0.01, "genie_m": 1.0}  # BRECQ/QDrop --weight 0.01; Genie main.py
# round_weight=1.0 (for every model)
# MobileNetV2: 0.1, BRECQ README.md ("--arch mobilenetv2 ... --weight 0.1") and QDrop exp/w2a4/mbv2/config.yaml
# (recon.weight: 0.1, against 0.01 in exp/w2a4/r18); Genie keeps 1.0 for it (main.py has one round_weight)
ARCH_REG_WEIGHT = {"mobilenetv2": {"brecq": 0.1, "qdrop": 0.1}}
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
        )

    @property
    def mixes_inputs(self) -> bool:
        """QDrop-style: mix FP and quantized block inputs and drop activation quantization at random."""
        return self.method in ("qdrop", "genie_m")


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the block of interest has been seen."""


def first_tensor(out: Any) -> torch.Tensor:
    """A block's main output: the tensor itself, or the first item of a tuple (transformers layers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def recon_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the feature dim (1, or -1 for tokens), averaged over the rest (BRECQ)."""
    return (out - target).pow(2).sum(-1 if out.dim() == 3 else 1).mean()


class BlockInputs:
    """What a block is called with: its first positional tensor cached by rows (``x``), every other argument
    either cached by rows too (a tensor with the batch as first dim) or kept from the first call."""

    def __init__(self, budget: ByteBudget, folder: str, name: str) -> None:
        self.budget, self.folder, self.name = budget, folder, name
        self.x = TensorCache(budget, folder, f"{name}_x")
        self.args: list = []
        self.kwargs: dict = {}
        self.started = False

    def _slot(self, value: Any, batch: int, key: str) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == batch:
            cache = TensorCache(self.budget, self.folder, f"{self.name}_{key}")
            cache.append(value)
            return cache
        return value

    def append(self, args: tuple, kwargs: dict) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError("reconstruction blocks must take a tensor as their first positional argument")
        batch = len(args[0])
        self.x.append(args[0])
        if not self.started:
            self.started = True
            self.args = [self._slot(a, batch, f"a{i}") for i, a in enumerate(args[1:])]
            self.kwargs = {k: self._slot(v, batch, k) for k, v in kwargs.items()}
            return
        for slot, value in zip(self.args, args[1:], strict=False):
            if isinstance(slot, TensorCache):
                slot.append(value)
        for k, slot in self.kwargs.items():
            if isinstance(slot, TensorCache):
                slot.append(kwargs[k])

    def __len__(self) -> int:
        return len(self.x)

    def extra(self, idx: torch.Tensor, device: torch.device) -> tuple[list, dict]:
        """The other arguments for rows ``idx``."""

        def pick(slot):
            return slot[idx].to(device) if isinstance(slot, TensorCache) else slot

        return [pick(a) for a in self.args], {k: pick(v) for k, v in self.kwargs.items()}

    @property
    def spilled(self) -> int:
        slots = [self.x, *self.args, *self.kwargs.values()]
        return sum(c.spilled for c in slots if isinstance(c, TensorCache))


@torch.no_grad()
def capture(
    model: nn.Module,
    block: nn.Module,
    images: torch.Tensor,
    inputs: BlockInputs | None,
    outputs: TensorCache | None,
) -> None:
    """Run ``model`` over ``images`` and cache ``block``'s inputs (before any quantizer of the block's own
    runs) and/or its main output, stopping each pass there."""
    device = next(model.parameters()).device

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if inputs is not None:
            inputs.append(args, kwargs)
        if outputs is None:
            raise _Stop

    def hook(module: nn.Module, args: tuple, out: Any) -> None:
        outputs.append(first_tensor(out))
        raise _Stop

    handles = [block.register_forward_pre_hook(pre_hook, prepend=True, with_kwargs=True)]
    if outputs is not None:
        handles.append(block.register_forward_hook(hook))
    try:
        for i in range(0, n_rows(images), CAPTURE_BATCH):
            with contextlib.suppress(_Stop):
                call(model, rows(images, i, i + CAPTURE_BATCH, device))
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def execution_order(model: nn.Module, names: list[str], image: Inputs) -> list[str]:
    """The blocks ``names`` in the order ``fp_model`` first calls them on ``image`` (``model.forward_order``),
    after checking that ``fp_model`` has them all."""
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"fp_model has no module {name!r}: pass the model that was quantized") from err
    return forward_order(model, names, image)


@contextlib.contextmanager
def input_bypassed(quantizer: ActQuantizer | None) -> Iterator[ActQuantizer | None]:
    """Inside: the hook that applies a block's own input quantizer passes tensors through (yielded, so the
    caller applies it itself)."""
    if quantizer is None:
        yield None
        return
    quantizer.hooked = False
    try:
        yield quantizer
    finally:
        quantizer.hooked = True


def block_input(
    cfg: ReconConfig, x_q: torch.Tensor, x_fp: torch.Tensor | None, quantizer: ActQuantizer | None
) -> torch.Tensor:
    """The input one optimisation step feeds the block (its own input quantizer already bypassed):

    - brecq: the quantized model's input, quantized by the block's input quantizer if it has one;
    - qdrop: that, mixed elementwise 50/50 with the FP model's input (QDrop quant/block_recon.py:
      ``torch.where(rand < input_prob, cur_inp, cur_sym)`` on the *quantized* input);
    - genie_m: the quantized model's input mixed 50/50 with the FP input *before* the block's input quantizer,
      which then quantizes and drops again (Genie reconstruct.py ``x_mix``, then QuantizableLayer).
    """
    if cfg.method == "genie_m":
        x = random_select(cfg.drop_prob, x_q, x_fp)
        return quantizer(x) if quantizer is not None else x
    if quantizer is not None:
        drop, quantizer.drop_prob = quantizer.drop_prob, 0.0
        x_q = quantizer(x_q)
        quantizer.drop_prob = drop
    return random_select(cfg.drop_prob, x_q, x_fp) if cfg.method == "qdrop" else x_q


@torch.no_grad()
def block_loss(block: nn.Module, x: BlockInputs, y: TensorCache, rows: torch.Tensor) -> float:
    """Mean reconstruction loss of ``block`` on cached rows (quantized input, no dropping)."""
    device = next(block.parameters()).device
    losses = []
    for idx in rows.split(CAPTURE_BATCH):
        args, kwargs = x.extra(idx, device)
        out = first_tensor(block(x.x[idx].to(device), *args, **kwargs))
        losses.append(recon_loss(out, y[idx].to(device)).item() * len(idx))
    return sum(losses) / len(rows)


def optimise_block(
    block: nn.Module,
    acts: list[ActQuantizer],
    own_input: ActQuantizer | None,
    x_q: BlockInputs,
    x_fp: TensorCache | None,
    y_fp: TensorCache,
    cfg: ReconConfig,
    desc: str,
) -> None:
    """AdaRound + LSQ (+ weight steps for genie_m) on one block; leaves hard rounding behind."""
    device = next(block.parameters()).device
    layers = [m for m in block.modules() if is_quantized(m)]
    acts = [a for a in acts if a.enabled]
    rounders = [weight_quantizer(layer).start_adaround(fp_weight(layer)) for layer in layers]
    steps = [{"params": [a.step for a in acts], "lr": cfg.lr_act}]
    if cfg.method == "genie_m":
        steps.append({"params": [weight_quantizer(m).step for m in layers], "lr": cfg.lr_weight_step})
    steps = [group for group in steps if group["params"]]
    for group in steps:
        for p in group["params"]:
            p.requires_grad_(True)
    opt_round = torch.optim.Adam([r.v for r in rounders], lr=cfg.lr_round)
    opt_step = torch.optim.Adam(steps) if steps else None
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt_step, T_max=max(cfg.iters, 1)) if opt_step else None
    )
    for a in acts:
        a.drop_prob = cfg.drop_prob if cfg.mixes_inputs else 0.0
    try:
        bar = tqdm(range(cfg.iters), desc=desc, disable=not cfg.progress, leave=False)
        with input_bypassed(own_input):
            for it in bar:
                idx = torch.randperm(len(x_q))[: cfg.batch_size]
                x_fp_rows = x_fp[idx].to(device) if x_fp is not None else None
                x = block_input(cfg, x_q.x[idx].to(device), x_fp_rows, own_input)
                args, kwargs = x_q.extra(idx, device)
                rec = recon_loss(first_tensor(block(x, *args, **kwargs)), y_fp[idx].to(device))
                loss = rec
                if it >= cfg.warmup * cfg.iters:
                    beta = beta_schedule(it, cfg.iters, cfg.warmup, *cfg.beta)
                    loss = loss + cfg.reg_weight * sum(r.regularizer(beta) for r in rounders)
                opt_round.zero_grad(set_to_none=True)
                if opt_step is not None:
                    opt_step.zero_grad(set_to_none=True)
                loss.backward()
                opt_round.step()
                if opt_step is not None:
                    opt_step.step()
                    sched.step()
                if it % 50 == 0:
                    bar.set_postfix(rec=f"{rec.item():.4g}")
    finally:
        for r in rounders:
            r.harden()
        for group in steps:
            for p in group["params"]:
                p.requires_grad_(False)
        for a in acts:
            a.drop_prob = 0.0


def reconstruct_block(
    qmodel: QuantModel, fp_model: nn.Module, name: str, images: torch.Tensor, cfg: ReconConfig, desc: str
) -> dict:
    """Cache, calibrate and optimise one block; returns its log entry (losses before and after)."""
    start = time.perf_counter()
    qblock, fblock = qmodel.model.get_submodule(name), fp_model.get_submodule(name)
    device = next(qblock.parameters()).device
    with tempfile.TemporaryDirectory(prefix="genq_recon_") as tmp:
        budget = ByteBudget(cfg.max_cache_mb)
        fp_in = BlockInputs(budget, tmp, "fp") if cfg.mixes_inputs else None
        y_fp, x_q = TensorCache(budget, tmp, "y_fp"), BlockInputs(budget, tmp, "q")
        capture(fp_model, fblock, images, fp_in, y_fp)
        capture(qmodel.model, qblock, images, x_q, None)
        probe = torch.arange(min(n_rows(images), cfg.init_size))
        acts = qmodel.block_acts(name)
        with calibrating(qblock, acts), torch.no_grad():
            args, kwargs = x_q.extra(probe, device)
            qblock(x_q.x[probe].to(device), *args, **kwargs)
        before = block_loss(qblock, x_q, y_fp, probe)
        own_input = qmodel.act(name, INPUT)
        loop_start = time.perf_counter()
        optimise_block(qblock, acts, own_input, x_q, fp_in.x if fp_in is not None else None, y_fp, cfg, desc)
        loop_seconds = time.perf_counter() - loop_start
        after = block_loss(qblock, x_q, y_fp, probe)
        spilled = y_fp.spilled + x_q.spilled + (fp_in.spilled if fp_in is not None else 0)
        del fp_in, y_fp, x_q  # release memory-mapped chunks before their folder goes
    seconds = time.perf_counter() - start
    return {
        "block": name,
        "loss_nearest": before,
        "loss_final": after,
        "spilled_chunks": spilled,
        "seconds": seconds,
        "optimise_seconds": loop_seconds,
    }


def check_images(calib_images: Any, fp_model: nn.Module) -> Inputs:
    """The calibration inputs (a tensor, a tuple of batch-first tensors for multi-input models, or anything
    with ``.images`` such as a data Split), checked: at least 2 rows, all finite, accepted by the model."""
    images = check_inputs(getattr(calib_images, "images", calib_images), "calib_images")
    if n_rows(images) < 2:
        raise ValueError(f"calib_images must hold at least 2 images (N, C, H, W), got {n_rows(images)}")
    for arg in as_args(images):
        if arg.is_floating_point() and not torch.isfinite(arg).all():
            bad = (
                (~torch.isfinite(arg.flatten(1) if arg.dim() > 1 else arg[:, None]))
                .any(1)
                .nonzero()
                .flatten()
            )
            raise ValueError(
                f"calib_images holds NaN or infinite values in {len(bad)} image(s), e.g. {bad[:5].tolist()}"
            )
    try:
        with torch.no_grad():
            call(fp_model, rows(images, 0, 2, device_of(fp_model)))
    except Exception as err:  # noqa: BLE001 - any failure here is the images' shape or type
        shapes = [tuple(a.shape) for a in as_args(images)]
        raise ValueError(f"fp_model rejects calib_images of shape(s) {shapes}: {err}") from err
    return images


def reconstruct(
    qmodel: QuantModel, fp_model: nn.Module, calib_images: Inputs, config: ReconConfig | None = None
) -> QuantModel:
    """Calibrate and reconstruct ``qmodel`` (in place, returned) against ``fp_model`` on ``calib_images``.

    Raises before touching ``qmodel`` on bad input (non-finite or too few images, a shape the model rejects).
    Blocks the model never calls on the images are listed in ``qmodel.recon_log`` as ``not_called``.
    """
    if not isinstance(qmodel, QuantModel):
        raise TypeError(f"qmodel must be a QuantModel from quantize(...), got {type(qmodel).__name__}")
    cfg = (config or ReconConfig()).resolved(qmodel.report.architecture)
    fp_model.eval()  # before check_images' forward pass: a model in train mode would update its BN statistics
    images = check_images(calib_images, fp_model)
    device = next(qmodel.parameters()).device
    qmodel.eval().requires_grad_(False)
    qmodel.recon_config = cfg
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        if cfg.method == "nearest":
            with calibrating(qmodel), torch.no_grad():
                call(qmodel, rows(images, 0, cfg.init_size, device))
            return qmodel
        order = execution_order(fp_model, qmodel.blocks, rows(images, 0, 1, device))
        for i, name in enumerate(order):
            desc = f"{cfg.method} block {i + 1}/{len(order)} {name}"
            qmodel.recon_log.append(reconstruct_block(qmodel, fp_model, name, images, cfg, desc))
        skipped = [b for b in qmodel.blocks if b not in order]
        if skipped:
            qmodel.recon_log.append({"not_called": skipped})
    return qmodel
