"""BRECQ's activation pass: after every block's rounding is learned with FP activations, the activation step
sizes alone are learned block by block, as BRECQ's ``main_imagenet.py`` runs it:

1. every activation quantizer is initialised in one forward pass of the quantized model (weights hard-rounded,
   activations on) over the first calibration images (``qnn.set_quant_state(True, True); qnn(cali_data[:64])``:
   the Lp search of ``quant/quant_layer.py``);
2. for each block: the FP model's input and output at that block are cached (``block_reconstruction(...,
   act_quant=True)`` with ``asym=False``: ``quant/data_utils.py`` caches both from the FP model), and Adam
   (lr ``--lr`` 4e-4, cosine to 0 over ``--iters_a`` iterations) learns the block's activation steps on the
   Lp loss with ``--p`` 2.4 (``quant/block_recon.py``: ``LossFunction(round_loss='none', p=p)``).

Deviations: the initialisation uses ``ReconConfig.init_size`` images (BRECQ: 64), and the block's own input
quantizer, where a block has one, is applied to the FP input (BRECQ has none: its quantizers sit on outputs).
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch import nn

from genqlib.infra.progress import tqdm
from genqlib.quant.cache import ByteBudget, TensorCache
from genqlib.quant.capture import (
    BlockInputs,
    block_input,
    block_loss,
    capture,
    first_tensor,
    input_bypassed,
    recon_loss,
)
from genqlib.quant.inputs import Inputs, call, n_rows, rows
from genqlib.quant.layers import INPUT
from genqlib.quant.model import QuantModel
from genqlib.quant.quantizer import ActQuantizer, calibrating
from genqlib.quant.recon_config import ACT_LOSS_P, ReconConfig


def learn_steps(
    block: nn.Module,
    acts: list[ActQuantizer],
    own_input: ActQuantizer | None,
    x_fp: BlockInputs,
    y_fp: TensorCache,
    cfg: ReconConfig,
    desc: str,
) -> None:
    """Adam on the activation steps of one block (BRECQ block_recon.py with act_quant=True)."""
    device = next(block.parameters()).device
    steps = list({id(a.step): a.step for a in acts}.values())
    for p in steps:
        p.requires_grad_(True)
    opt = torch.optim.Adam(steps, lr=cfg.lr_act)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.act_iters, 1), eta_min=0.0)
    try:
        bar = tqdm(range(cfg.act_iters), desc=desc, disable=not cfg.progress, leave=False)
        with input_bypassed(own_input):
            for it in bar:
                idx = torch.randperm(len(x_fp))[: cfg.batch_size]
                x = block_input(cfg, x_fp.x[idx].to(device), None, own_input)
                args, kwargs = x_fp.extra(idx, device)
                loss = recon_loss(first_tensor(block(x, *args, **kwargs)), y_fp[idx].to(device), ACT_LOSS_P)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if it % 50 == 0:
                    bar.set_postfix(rec=f"{loss.item():.4g}")
    finally:
        for p in steps:
            p.requires_grad_(False)


def activation_block(
    qmodel: QuantModel, fp_model: nn.Module, name: str, images: Inputs, cfg: ReconConfig, desc: str
) -> dict:
    """Cache one block's FP input and output and learn its activation steps; returns its log entry."""
    start = time.perf_counter()
    qblock, fblock = qmodel.model.get_submodule(name), fp_model.get_submodule(name)
    acts = [a for a in qmodel.block_acts(name) if a.enabled]
    with tempfile.TemporaryDirectory(prefix="genq_recon_") as tmp:
        budget = ByteBudget(cfg.max_cache_mb)
        x_fp, y_fp = BlockInputs(budget, tmp, "fp"), TensorCache(budget, tmp, "y_fp")
        capture(fp_model, fblock, images, x_fp, y_fp)
        probe = torch.arange(min(n_rows(images), cfg.init_size))
        before = block_loss(qblock, x_fp, y_fp, probe, ACT_LOSS_P)
        loop_start = time.perf_counter()
        if acts:
            learn_steps(qblock, acts, qmodel.act(name, INPUT), x_fp, y_fp, cfg, desc)
        loop_seconds = time.perf_counter() - loop_start
        after = block_loss(qblock, x_fp, y_fp, probe, ACT_LOSS_P)
        spilled = x_fp.spilled + y_fp.spilled
        del x_fp, y_fp  # release memory-mapped chunks before their folder goes
    return {
        "block": name,
        "stage": "activations",
        "loss_nearest": before,
        "loss_final": after,
        "spilled_chunks": spilled,
        "seconds": time.perf_counter() - start,
        "optimise_seconds": loop_seconds,
    }


def activation_pass(
    qmodel: QuantModel, fp_model: nn.Module, images: Inputs, cfg: ReconConfig, order: list[str]
) -> list[dict]:
    """BRECQ's activation pass over the blocks ``order`` (module docstring); the log entries, one a block."""
    device = next(qmodel.parameters()).device
    with calibrating(qmodel), torch.no_grad():
        call(qmodel, rows(images, 0, cfg.init_size, device))
    out = []
    for i, name in enumerate(order):
        desc = f"brecq activations {i + 1}/{len(order)} {name}"
        out.append(activation_block(qmodel, fp_model, name, images, cfg, desc))
    return out
