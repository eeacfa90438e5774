"""Block-wise reconstruction (BRECQ, QDrop, Genie-M) of a QuantModel on calibration images.

For each block, in execution order: cache the FP model's input and output at that block (the target is
the FP block's output on the FP input) and the quantized model's input there (all earlier blocks already
reconstructed); calibrate the block's activation step sizes (Lp search) on that input; then minimise

    sum over features of (block(x) - y_fp)^2, averaged over the rest   +   reg_weight * AdaRound regulariser

with Adam on the rounding variables V (lr_round) and, when activations are quantized, on the LSQ
activation step sizes (lr_act, cosine decay); per-method defaults in ``LR_ACT``/``REG_WEIGHT``. Methods:

- ``brecq``: as BRECQ's ``main_imagenet.py`` runs it: every block's rounding first, with all activation
  quantizers off (input = the weight-quantized model's input, ``asym=True, act_quant=False``), then the
  activation pass of ``brecq.py`` (steps alone, FP block inputs, lr 4e-4, ``act_iters``, Lp p = 2.4);
- ``brecq_joint``: input = the quantized model's input; rounding and activation steps learned jointly in one
  pass (QDrop's order without the drop; genqlib's ``brecq`` before it ran BRECQ's two passes).
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

import tempfile
import time
from typing import Any

import torch
from torch import nn

from genqlib.infra.progress import tqdm
from genqlib.quant.adaround import beta_schedule
from genqlib.quant.brecq import activation_pass
from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.capture import (
    CAPTURE_BATCH,
    BlockInputs,
    block_input,
    block_loss,
    capture,
    first_tensor,
    input_bypassed,
    recon_loss,
)
from genqlib.quant.inputs import Inputs, as_args, call, check_inputs, device_of, n_rows, rows
from genqlib.quant.layers import INPUT, fp_weight, is_quantized, weight_quantizer
from genqlib.quant.model import QuantModel, forward_order
from genqlib.quant.quantizer import ActQuantizer, calibrating
from genqlib.quant.recon_config import METHODS, ReconConfig

__all__ = ["CAPTURE_BATCH", "METHODS", "BlockInputs", "ReconConfig", "block_input", "capture", "first_tensor"]
__all__ += ["input_bypassed", "reconstruct", "recon_loss"]


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
    """Cache, calibrate and optimise one block (with the activation quantizers switched off, BRECQ's weight
    pass: no calibration, rounding alone); returns its log entry (losses before and after)."""
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
        if any(a.enabled for a in acts):
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
        "stage": "weights" if cfg.method == "brecq" else "joint",
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
        # BRECQ main_imagenet.py: the weight pass runs with FP activations, the activation pass after it
        acts = [m for m in qmodel.modules() if isinstance(m, ActQuantizer)] if cfg.method == "brecq" else []
        enabled = [a.enabled for a in acts]
        for a in acts:
            a.enabled = False
        try:
            for i, name in enumerate(order):
                desc = f"{cfg.method} block {i + 1}/{len(order)} {name}"
                qmodel.recon_log.append(reconstruct_block(qmodel, fp_model, name, images, cfg, desc))
        finally:
            for a, on in zip(acts, enabled, strict=True):
                a.enabled = on
        if cfg.method == "brecq":
            qmodel.recon_log += activation_pass(qmodel, fp_model, images, cfg, order)
        skipped = [b for b in qmodel.blocks if b not in order]
        if skipped:
            qmodel.recon_log.append({"not_called": skipped})
    return qmodel
