"""QuEST's selective, progressive finetuning, as hatchetProject/QuEST's Stable Diffusion code runs it.

``txt2img.py`` calls ``pd_optimize_timeembed`` then ``pd_optimize_timewise`` (``qdiff/post_layer_recon_sd.py``),
each supervised by the FP UNet (the same model with quantization off), data-free (the calibration rows):

Stage 1, ``"time"`` (``pd_optimize_timeembed``): the weights and biases of the layers whose name holds
``emb_layer``: the ResBlocks' ``emb_layers`` (LDM) = diffusers' ``ResnetBlock2D.time_emb_proj`` (the Linear of
``emb_layers = Sequential(SiLU, Linear)``); the time-embedding MLP (``time_embed``/``time_embedding``) is not
matched and stays frozen. Adam lr 1e-5 for the weights, and per timestep a fresh Adam (lr 1e-5) on that
timestep's step sizes of those layers' input quantizers. Timesteps in sampling order; per timestep 2
calibration rows and 200 steps at the first timestep, 50 where t > 300, 400 otherwise.

Stage 2, ``"ff"`` (``pd_optimize_timewise``): the weights and biases of the layers whose name holds ``ff.net``
(the transformer blocks' feed-forward: ``ff.net.0.proj``, ``ff.net.2``), Adam lr 1e-5; per (epoch, timestep)
a fresh Adam (lr 1e-4) on that timestep's step sizes of every activation quantizer whose name does not hold
``emb`` (attention matmul quantizers included). 20 epochs over the timesteps; per visit 64 random rows of
that timestep in 16 steps of 4.

Loss (both stages): for each row, over the hooked layers, ``MSE(layer output, FP) + MSE(UNet output, FP)``
(the output term sits inside the reference's loop over layers, so it counts once per hooked layer), averaged
over the rows. Weights learn through the hard AdaRound rounding with a straight-through floor
(``qdiff/adaptive_rounding.py``: ``floor_ste(x / delta) + (alpha >= 0)``; the rounding variables stay).

Deviation kept for cost, named in the record: ``max_steps`` caps each stage's optimizer steps; the schedule is
scaled down uniformly (stage 1: every timestep's count; stage 2: epochs first, then steps per visit), each
timestep keeping at least one step. ``None`` runs the reference's schedule in full.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from genqlib.quant import AdaRound, QuantModel, fp_weight, weight_quantizer

LR_WEIGHT = 1e-5  # post_layer_recon_sd.py: optimizer_w = Adam(opt_params_w, lr=1e-5), both stages
LR_ACT = {
    "time": 1e-5,
    "ff": 1e-4,
}  # post_layer_recon_sd.py: optimizer_a lr 1e-5 (timeembed), 1e-4 (timewise)
TIME_ROWS = 2  # get_timeembed_labels: b_size = 2, one batch
TIME_STEPS = (200, 50, 400)  # pd_optimize_timeembed: t_epochs at timesteps[0], where t > 300, otherwise
TIME_SPLIT = 300
FF_EPOCHS, FF_STEPS, FF_ROWS = 20, 16, 4  # pd_optimize_timewise: 20 epochs; get_labels_timewise 16 x 4 rows
STAGES = ("time", "ff")  # txt2img.py: pd_optimize_timeembed, then pd_optimize_timewise


def time_layers(qmodel: QuantModel) -> list[str]:
    """Stage 1's layers: reference filter ``"emb_layer" in name`` = diffusers' ``time_emb_proj``."""
    return [n for n in qmodel.layer_names if n.endswith("time_emb_proj") or "emb_layer" in n]


def ff_layers(qmodel: QuantModel) -> list[str]:
    """Stage 2's layers: reference filter ``"ff.net" in name``."""
    return [n for n in qmodel.layer_names if "ff.net" in n]


def stage_layers(qmodel: QuantModel, stage: str) -> list[str]:
    return time_layers(qmodel) if stage == "time" else ff_layers(qmodel)


def stage_acts(qmodel: QuantModel, stage: str) -> list[nn.Module]:
    """The activation quantizers whose step sizes a stage learns: stage 1 those of the time-embedding
    projections' inputs, stage 2 every one whose module path does not hold ``emb``."""
    if stage == "time":
        keep = {n.replace(".", "/") for n in time_layers(qmodel)}
        return [q for k, q in qmodel.quest_acts.items() if k.rpartition(":")[0] in keep]
    return [q for k, q in qmodel.quest_acts.items() if "emb" not in k]


def time_schedule(timesteps: list[int], max_steps: int | None) -> dict[int, int]:
    """Stage 1's optimizer steps per timestep (sampling order), scaled to ``max_steps`` when set."""
    first, high, low = TIME_STEPS
    full = {t: first if i == 0 else (high if t > TIME_SPLIT else low) for i, t in enumerate(timesteps)}
    return _scaled(full, max_steps)


def ff_schedule(n_timesteps: int, max_steps: int | None) -> tuple[int, int]:
    """Stage 2's (epochs, steps per visit of a timestep), scaled to ``max_steps`` when set."""
    epochs, steps = FF_EPOCHS, FF_STEPS
    if max_steps is not None and epochs * n_timesteps * steps > max_steps:
        epochs = max(1, math.floor(max_steps / (n_timesteps * steps)))
        if epochs * n_timesteps * steps > max_steps:
            steps = max(1, max_steps // (epochs * n_timesteps))
    return epochs, steps


def _scaled(full: dict[int, int], max_steps: int | None) -> dict[int, int]:
    total = sum(full.values())
    if max_steps is None or total <= max_steps:
        return full
    return {t: max(1, round(n * max_steps / total)) for t, n in full.items()}


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """Floor with an identity gradient (``qdiff/quant_layer.py`` ``floor_ste``)."""
    return (x.floor() - x).detach() + x


class LiveFloorRound(AdaRound):
    """Hard AdaRound whose floor follows the layer's FP weight (the reference's ``floor_ste(w / delta) +
    (alpha >= 0)``), so the weight learns; ``bake`` writes the floor back and restores a plain AdaRound."""

    def forward(self) -> torch.Tensor:
        w, step = self._source()
        return floor_ste(w / step) + self.rounding()

    @classmethod
    def follow(cls, layer: nn.Module) -> AdaRound:
        """Make ``layer``'s (hard) AdaRound follow its FP weight; returns it."""
        r = weight_quantizer(layer).adaround
        if r is None or r.mode != "hard":
            raise RuntimeError("QuEST finetunes from AdaRound reconstruction: the layer has no hard rounding")
        r.__class__ = cls
        object.__setattr__(r, "_source", lambda: (fp_weight(layer), weight_quantizer(layer).step))
        return r

    @torch.no_grad()
    def bake(self) -> None:
        w, step = self._source()
        self.base.copy_(torch.floor(w / step))
        object.__delattr__(self, "_source")
        self.__class__ = AdaRound


def _capture(model: nn.Module, names: list[str], store: dict, detach: bool) -> list:
    def hook(name):
        def fn(module, args, out):
            store[name] = out.detach() if detach else out

        return fn

    return [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]


def _loss(q_out: torch.Tensor, f_out: torch.Tensor, q_layers: dict, f_layers: dict, rows) -> torch.Tensor:
    """Sum over hooked layers of MSE(layer) + MSE(output) (post_layer_recon_sd.py, per row, averaged)."""
    mse = nn.functional.mse_loss
    return sum(mse(q_layers[n], f_layers[n][rows]) + mse(q_out, f_out[rows]) for n in q_layers)


def run_stage(
    qmodel: QuantModel, fp_unet: nn.Module, calib: tuple, stage: str, max_steps: int | None, seed: int = 0
) -> dict:
    """One finetuning stage (module docstring) on ``qmodel`` (quantized weights with hard AdaRound, time-aware
    activation quantizers); returns its log: layers, step sizes trained, steps per timestep, lrs, losses."""
    layers, acts = stage_layers(qmodel, stage), stage_acts(qmodel, stage)
    timesteps = sorted(qmodel.clock.timesteps, reverse=True)  # "Reverse timestep order": sampling order
    by_t = {t: (calib[1] == t).nonzero().flatten() for t in timesteps}
    timesteps = [t for t in timesteps if len(by_t[t])]
    if stage == "time":
        steps = time_schedule(timesteps, max_steps)
        visits = [(t, steps[t], TIME_ROWS, 1) for t in timesteps]
    else:
        epochs, per_visit = ff_schedule(len(timesteps), max_steps)
        visits = [(t, per_visit, FF_ROWS, per_visit) for _ in range(epochs) for t in timesteps]
    log = {"layers": layers, "acts": len(acts), "lr_weight": LR_WEIGHT, "lr_act": LR_ACT[stage]}
    log.update(steps={}, losses=[])
    if not layers:
        return log
    qmodel.eval().requires_grad_(False)
    fp_unet.eval().requires_grad_(False)
    rounders = [LiveFloorRound.follow(qmodel.model.get_submodule(n)) for n in layers]
    weights = [p for n in layers for p in _layer_params(qmodel.model.get_submodule(n))]
    deltas = [q.delta for q in acts]
    for p in weights + deltas:
        p.requires_grad_(True)
    opt_w = torch.optim.Adam(weights, lr=LR_WEIGHT)
    gen = torch.Generator().manual_seed(seed)
    q_layers: dict = {}
    handles = _capture(qmodel.model, layers, q_layers, detach=False)
    try:
        for t, n_steps, rows_per_step, batches in visits:
            # a fresh optimizer for this timestep's step sizes (post_layer_recon_sd.py, inside the t loop)
            opt_a = torch.optim.Adam(deltas, lr=LR_ACT[stage]) if deltas else None
            idx = by_t[t][torch.randperm(len(by_t[t]), generator=gen)[: rows_per_step * batches]]
            f_out, f_layers = _labels(fp_unet, calib, idx, layers)
            for i in range(n_steps):
                part = torch.arange(len(idx)) if batches == 1 else _batch(i, rows_per_step, len(idx))
                out = qmodel.model(*(a[idx[part]] for a in calib), return_dict=False)[0]
                loss = _loss(out, f_out, q_layers, f_layers, part)
                for opt in (opt_w, opt_a):
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in (opt_w, opt_a):
                    if opt is not None:
                        opt.step()
                log["losses"].append(loss.item())
            log["steps"][t] = log["steps"].get(t, 0) + n_steps
    finally:
        for h in handles:
            h.remove()
        for p in weights + deltas:
            p.requires_grad_(False)
            p.grad = None
        for r in rounders:
            r.bake()
    return log


def _batch(i: int, size: int, n: int) -> torch.Tensor:
    """Rows of the i-th batch of ``size`` among ``n`` label rows (cycling)."""
    start = (i * size) % max(n, 1)
    return (torch.arange(size) + start) % n


def _layer_params(layer: nn.Module) -> list[nn.Parameter]:
    out = [fp_weight(layer)]
    if getattr(layer, "bias", None) is not None:
        out.append(layer.bias)
    return out


@torch.no_grad()
def _labels(
    fp_unet: nn.Module, calib: tuple, idx: torch.Tensor, layers: list[str]
) -> tuple[torch.Tensor, dict]:
    """The FP UNet's output and hooked layers' outputs on rows ``idx`` (get_timeembed_labels /
    get_labels_timewise)."""
    store: dict = {}
    handles = _capture(fp_unet, layers, store, detach=True)
    try:
        out = fp_unet(*(a[idx] for a in calib), return_dict=False)[0]
    finally:
        for h in handles:
            h.remove()
    return out, store


def finetune(
    qmodel: QuantModel,
    fp_unet: nn.Module,
    calib: tuple,
    max_steps: int | None,
    seed: int = 0,
    stages: tuple[str, ...] = STAGES,
    on_stage: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """Both stages in the reference's order, the second from the first's result (progressive)."""
    logs = {}
    for stage in stages:
        logs[stage] = run_stage(qmodel, fp_unet, calib, stage, max_steps, seed)
        if on_stage is not None:
            on_stage(stage, logs[stage])
    return logs
