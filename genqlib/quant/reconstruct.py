"""Block-wise reconstruction (BRECQ, QDrop, Genie-M) of a QuantModel on calibration images.

For each block, in execution order: cache the FP model's input and output at that block (the target is
the FP block's output on the FP input) and the quantized model's input there (all earlier blocks already
reconstructed); calibrate the block's activation step sizes (Lp search) on that input; then minimise

    sum over features of (block(x) - y_fp)^2, averaged over the rest   +   reg_weight * AdaRound regulariser

with Adam on the rounding variables V (lr_round) and, when activations are quantized, on the LSQ
activation step sizes (lr_act, cosine decay). Methods:

- ``brecq``: input = the quantized model's input; weights and activations learned jointly (BRECQ's code
  runs a weight pass then an activation pass; one joint pass is QDrop's and Genie's simplification).
- ``qdrop``: the input mixes FP and quantized inputs elementwise, and each activation quantizer inside the
  block is dropped (kept FP) elementwise with ``drop_prob`` (0.5).
- ``genie_m``: qdrop plus the weight step sizes learned jointly with the rounding (lr_weight_step).
- ``nearest``: step-size initialisation only (weights rounded to nearest), no optimisation.

Caches respect ``max_cache_mb`` by spilling to a temporary folder (see ``cache.py``); nothing is
recomputed. Seeded: the same inputs and config give the same model (global RNG state is left untouched).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from genqlib.quant.adaround import AdaRound, beta_schedule
from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.layers import QuantLayer
from genqlib.quant.model import QuantModel
from genqlib.quant.quantizer import ActQuantizer, calibrating, random_select

METHODS = ("brecq", "qdrop", "genie_m", "nearest")
CAPTURE_BATCH = 256  # images per forward pass while filling the caches


@dataclass(frozen=True)
class ReconConfig:
    """Reconstruction settings; defaults follow the paper setting (20,000 iterations per block, batch 32)."""

    method: str = "brecq"
    iters: int = 20_000
    batch_size: int = 32
    lr_act: float = 4e-4
    lr_round: float = 1e-3
    lr_weight_step: float = 1e-4  # genie_m only (Genie's default)
    reg_weight: float = 0.01  # 0.1 is known to help MobileNetV2
    warmup: float = 0.2  # fraction of iterations without the regulariser
    beta: tuple[float, float] = (20.0, 2.0)
    drop_prob: float = 0.5  # qdrop, genie_m
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

    @property
    def mixes_inputs(self) -> bool:
        """QDrop-style: mix FP and quantized block inputs and drop activation quantization at random."""
        return self.method in ("qdrop", "genie_m")


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the block of interest has been seen."""


def recon_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the feature dim (1, or -1 for tokens), averaged over the rest (BRECQ)."""
    return (out - target).pow(2).sum(-1 if out.dim() == 3 else 1).mean()


@torch.no_grad()
def capture(
    model: nn.Module,
    block: nn.Module,
    images: torch.Tensor,
    inputs: TensorCache | None,
    outputs: TensorCache | None,
) -> None:
    """Run ``model`` over ``images`` and cache ``block``'s input and/or output, stopping each pass there."""
    device = next(model.parameters()).device

    def pre_hook(module: nn.Module, args: tuple) -> None:
        if len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise TypeError(
                f"reconstruction blocks must take one tensor; {type(module).__name__} got {len(args)}"
            )
        if inputs is not None:
            inputs.append(args[0])
        if outputs is None:
            raise _Stop

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        outputs.append(out)
        raise _Stop

    handles = [block.register_forward_pre_hook(pre_hook)]
    if outputs is not None:
        handles.append(block.register_forward_hook(hook))
    try:
        for i in range(0, len(images), CAPTURE_BATCH):
            with contextlib.suppress(_Stop):
                model(images[i : i + CAPTURE_BATCH].to(device))
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def execution_order(model: nn.Module, names: list[str], image: torch.Tensor) -> list[str]:
    """The blocks ``names`` in the order ``model`` first calls them on ``image`` (unused ones dropped)."""
    seen: list[str] = []
    handles = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"fp_model has no module {name!r}: pass the model that was quantized") from err
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: seen.append(name)))
    try:
        model(image)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(seen))


@torch.no_grad()
def block_loss(block: nn.Module, x: TensorCache, y: TensorCache, rows: torch.Tensor) -> float:
    """Mean reconstruction loss of ``block`` on cached rows (quantized input, no dropping)."""
    device = next(block.parameters()).device
    losses = [
        recon_loss(block(x[idx].to(device)), y[idx].to(device)).item() * len(idx)
        for idx in rows.split(CAPTURE_BATCH)
    ]
    return sum(losses) / len(rows)


def optimise_block(
    block: nn.Module,
    x_q: TensorCache,
    x_fp: TensorCache | None,
    y_fp: TensorCache,
    cfg: ReconConfig,
    desc: str,
) -> None:
    """AdaRound + LSQ (+ weight steps for genie_m) on one block; leaves hard rounding behind."""
    device = next(block.parameters()).device
    layers = [m for m in block.modules() if isinstance(m, QuantLayer)]
    acts = [m for m in block.modules() if isinstance(m, ActQuantizer) and m.enabled]
    rounders: list[AdaRound] = [layer.weight_quant.start_adaround(layer.weight) for layer in layers]
    steps = [{"params": [a.step for a in acts], "lr": cfg.lr_act}]
    if cfg.method == "genie_m":
        steps.append({"params": [layer.weight_quant.step for layer in layers], "lr": cfg.lr_weight_step})
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
        for it in bar:
            idx = torch.randperm(len(x_q))[: cfg.batch_size]
            x = x_q[idx].to(device)
            if x_fp is not None:
                x = random_select(cfg.drop_prob, x_fp[idx].to(device), x)
            rec = recon_loss(block(x), y_fp[idx].to(device))
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
    with tempfile.TemporaryDirectory(prefix="genq_recon_") as tmp:
        budget = ByteBudget(cfg.max_cache_mb)
        x_fp = TensorCache(budget, tmp, "x_fp") if cfg.mixes_inputs else None
        y_fp, x_q = TensorCache(budget, tmp, "y_fp"), TensorCache(budget, tmp, "x_q")
        capture(fp_model, fblock, images, x_fp, y_fp)
        capture(qmodel.model, qblock, images, x_q, None)
        probe = torch.arange(min(len(images), cfg.init_size))
        with calibrating(qblock), torch.no_grad():
            qblock(x_q[probe].to(next(qblock.parameters()).device))
        before = block_loss(qblock, x_q, y_fp, probe)
        optimise_block(qblock, x_q, x_fp, y_fp, cfg, desc)
        after = block_loss(qblock, x_q, y_fp, probe)
        spilled = sum(c.spilled for c in (x_fp, y_fp, x_q) if c is not None)
        del x_fp, y_fp, x_q  # release memory-mapped chunks before their folder goes
    seconds = time.perf_counter() - start
    return {
        "block": name,
        "loss_nearest": before,
        "loss_final": after,
        "spilled_chunks": spilled,
        "seconds": seconds,
    }


def as_images(calib_images: torch.Tensor) -> torch.Tensor:
    """The calibration tensor (a tensor, or anything with ``.images`` such as a data Split), checked."""
    images = getattr(calib_images, "images", calib_images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"calib_images must be a tensor of images (N, C, H, W), got {type(calib_images).__name__}"
        )
    if len(images) == 0:
        raise ValueError("calib_images is empty: reconstruction needs at least one calibration image")
    return images


def reconstruct(
    qmodel: QuantModel, fp_model: nn.Module, calib_images: torch.Tensor, config: ReconConfig | None = None
) -> QuantModel:
    """Calibrate and reconstruct ``qmodel`` (in place, returned) against ``fp_model`` on ``calib_images``."""
    cfg = config or ReconConfig()
    if not isinstance(qmodel, QuantModel):
        raise TypeError(f"qmodel must be a QuantModel from quantize(...), got {type(qmodel).__name__}")
    images = as_images(calib_images)
    device = next(qmodel.parameters()).device
    qmodel.eval().requires_grad_(False)
    fp_model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        if cfg.method == "nearest":
            with calibrating(qmodel), torch.no_grad():
                qmodel(images[: cfg.init_size].to(device))
            return qmodel
        order = execution_order(fp_model, qmodel.blocks, images[:1].to(device))
        for i, name in enumerate(order):
            desc = f"{cfg.method} block {i + 1}/{len(order)} {name}"
            qmodel.recon_log.append(reconstruct_block(qmodel, fp_model, name, images, cfg, desc))
    return qmodel
