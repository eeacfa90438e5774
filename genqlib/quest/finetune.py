"""QuEST's selective, progressive finetuning: only the layers most sensitive to quantization learn.

Stage 1 finetunes the time-embedding layers, stage 2 (starting from stage 1's result) the attention layers,
everything else frozen, supervised by the FP UNet on the calibration rows: the task loss (the FP UNet's output)
plus the alignment of each finetuned layer's output with the FP layer's.

genqlib's choices where the paper summary leaves them open:

- "time embedding" = ``time_embedding.linear_1/linear_2`` and every ResNet block's ``time_emb_proj`` (LDM's
  ``emb_layers``; QuEST's reference code finetunes both); "attention" = ``to_q``, ``to_k``, ``to_v`` and
  ``to_out.0`` of the self- and cross-attention (``attn1``, ``attn2``); the feed-forward and the
  ``proj_in``/``proj_out`` convs stay frozen.
- Adam, lr 1e-4 with cosine decay per stage, batch 32 rows drawn from one timestep group per step (the UNet runs
  one timestep per call, so a batch never mixes quantizer groups). 1e-4 moves a weight by about one 4-bit step
  of the mini UNet's typical channel in ~100 iterations: enough to change roundings, small enough to stay close
  to the FP weights.
- Task loss = mean squared error of the noise prediction (unit scale for an epsilon UNet); alignment loss =
  mean over the finetuned layers of their output's squared error divided by the FP output's mean square
  (relative, so layers of different scale count alike), weight ``align_weight=1.0``: both terms are relative
  errors of the same order at the start.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from genqlib.quant import QuantModel, fp_weight
from genqlib.quest.config import GenQuantConfig
from genqlib.quest.timeaware import group_rows

ATTENTION_ENDS = ("to_q", "to_k", "to_v", "to_out.0")


def time_layers(qmodel: QuantModel) -> list[str]:
    """QuEST's first stage: the time-embedding MLP and every block's projection of it."""
    return [n for n in qmodel.layer_names if n.startswith("time_embedding.") or n.endswith("time_emb_proj")]


def attention_layers(qmodel: QuantModel) -> list[str]:
    """QuEST's second stage: q, k, v and output projections of the self- and cross-attention."""
    names = qmodel.layer_names
    return [n for n in names if (".attn1." in n or ".attn2." in n) and n.endswith(ATTENTION_ENDS)]


def finetune(
    qmodel: QuantModel,
    fp_unet: nn.Module,
    calib: tuple,
    layers: list[str],
    iters: int,
    cfg: GenQuantConfig,
    n_groups: int = 1,
) -> list[float]:
    """Finetune the weights and biases of ``layers`` (module paths of ``qmodel.model``) with everything else
    frozen: loss = MSE(quantized UNet output, FP output) + align_weight * mean relative MSE of the layers'
    outputs against the FP model's same layers. Each step draws ``cfg.batch_size`` rows of one timestep group.
    Returns the loss of every step."""
    if iters <= 0 or not layers:
        return []
    qmodel.eval().requires_grad_(False)
    fp_unet.eval().requires_grad_(False)
    params = _unfreeze(qmodel.model, layers)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)
    q_out, f_out = {}, {}
    handles = _capture(qmodel.model, layers, q_out) + _capture(fp_unet, layers, f_out)
    losses = []
    try:
        for args in _group_batches(calib, n_groups, cfg, iters):
            with torch.no_grad():
                target = fp_unet(*args, return_dict=False)[0]
            task = (qmodel(*args) - target).pow(2).mean()
            loss = task + cfg.align_weight * _alignment(q_out, f_out, layers)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return losses


def _unfreeze(model: nn.Module, layers: list[str]) -> list[nn.Parameter]:
    """The FP weights (under the quantizer) and biases of ``layers``, set to require gradients."""
    params = []
    for name in layers:
        layer = model.get_submodule(name)
        params.append(fp_weight(layer))
        if getattr(layer, "bias", None) is not None:
            params.append(layer.bias)
    for p in params:
        p.requires_grad_(True)
    return params


def _group_batches(calib: tuple, n_groups: int, cfg: GenQuantConfig, iters: int) -> Iterator[tuple]:
    """``iters`` batches of at most ``cfg.batch_size`` rows, each from one random timestep group, seeded."""
    groups = list(group_rows(calib[1], n_groups).values())
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(iters):
        rows = groups[int(torch.randint(len(groups), (1,), generator=gen))]
        idx = rows[torch.randperm(len(rows), generator=gen)[: cfg.batch_size]]
        yield tuple(a[idx] for a in calib)


def _alignment(q_out: dict, f_out: dict, layers: list[str]) -> torch.Tensor:
    """Mean over ``layers`` of the squared error of the quantized output relative to the FP output's mean
    square."""
    errors = ((q_out[n] - f_out[n]).pow(2).mean() / f_out[n].pow(2).mean().clamp(min=1e-12) for n in layers)
    return sum(errors) / len(layers)


def _capture(model: nn.Module, names: list[str], store: dict) -> list:
    """Forward hooks that put each named module's output into ``store`` under its name."""

    def hook(name):
        def fn(module, args, out):
            store[name] = out

        return fn

    return [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
