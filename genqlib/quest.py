"""Generator quantization: a low-bit UNet (and optionally text encoder) that still makes the calibration data.

Seed paper 004, QuEST (Wang et al. 2024, "Low-bit Diffusion Model Quantization via Efficient Selective
Finetuning"), in the workbench. The question is GenQ's: can the generator that makes the synthetic calibration
images itself run at low bit width without hurting the images it makes? Everything here is data-free: the only
data are the FP pipeline's own sampling trajectories for class prompts.

Two ways to quantize the UNet, both with ``genqlib.quant``'s quantizers (weights per output channel,
activations per tensor, step sizes from the Lp search), at W8A8, W4A8 or W4A4:

- ``method="ptq"`` (the baseline): quantize, then calibrate every activation step size on UNet inputs
  recorded along the FP pipeline's trajectories (``reconstruct(..., method="nearest")``; ``ptq_recon="brecq"``
  adds a short block reconstruction).
- ``method="quest"``: the same start, then
  1. a **time-aware activation quantizer** (``TimeAwareActQuantizer``): every activation quantizer holds one step
     size per *timestep group* and uses the group of the timestep the UNet is called with; a forward pre-hook on
     the UNet reads its ``timestep`` argument and sets the shared ``TimeClock``;
  2. **selective, progressive finetuning** of the weights (and biases) most sensitive to quantization, first the
     time-embedding layers, then the attention layers, everything else frozen, supervised by the FP UNet: the
     task loss (the FP UNet's output) plus the alignment of each finetuned layer's output with the FP layer's.

The quantized generator keeps the diffusers interface: ``quantized_pipeline`` returns a StableDiffusionPipeline
whose ``unet`` is the quantized UNet (the UNet2DConditionModel itself, quantizers attached by parametrization
and hooks, so it returns what diffusers expects), whose id (``generate.pipeline_id``) differs from the FP
generator's, and ``generate()`` writes its quantization config into the set's key.

Settings the paper summary leaves open, genqlib's choices and why:

- **Timestep groups** (``n_groups=4``): equal quarters of the training timestep range [0, 1000). Groups of the
  *training* range, not of one sampler's steps, so the same quantizer serves 4- or 50-step sampling; four groups
  give each group ~1/4 of the calibration rows (>= 256 at the mini size) for its Lp search, and the activation
  ranges of the mini UNet change most between early (noisy) and late steps.
- **Which layers**: "time embedding" = ``time_embedding.linear_1/linear_2`` and every ResNet block's
  ``time_emb_proj`` (LDM's ``emb_layers``, QuEST's reference code finetunes both); "attention" = ``to_q``,
  ``to_k``, ``to_v`` and ``to_out.0`` of the self- and cross-attention (``attn1``, ``attn2``); the feed-forward
  and the ``proj_in``/``proj_out`` convs stay frozen.
- **Iterations** (``iters_time``, ``iters_attn``): 200 + 200 at mini (a few minutes on one CPU thread), the
  stages run one after the other, each from the result of the previous one (progressive).
- **Optimiser**: Adam, lr 1e-4 with cosine decay per stage, batch 32 rows drawn from one timestep group per
  step (the UNet runs one timestep per call, so a batch never mixes quantizer groups). 1e-4 moves a weight by
  about one 4-bit step of the mini UNet's typical channel in ~100 iterations: enough to change roundings,
  small enough to stay close to the FP weights.
- **Loss weights**: task loss = mean squared error of the noise prediction (unit scale for an epsilon UNet);
  alignment loss = mean over the finetuned layers of their output's squared error divided by the FP output's
  mean square (relative, so layers of different scale count alike), weight ``align_weight=1.0``: both terms
  are relative errors of the same order at the start.
- **Activation step sizes** are calibrated (per group) before finetuning and kept fixed during it: QuEST's
  point is to make the weights robust to the activation quantizers, not to retune them.
- **Calibration trajectories**: ``calib_per_class`` label prompts per class, sampled by the FP pipeline with the
  profile's scheduler, steps and guidance (3.5) from seeds disjoint from the evaluated images'; every UNet call
  is recorded, the classifier-free-guidance batch included (unconditional and conditional rows), and
  ``calib_rows`` rows are kept at random.
- **Edges**: ``QuantConfig``'s default: the first layer that runs (``time_embedding.linear_1``) and the last
  (``conv_out``) at 8 bits, the UNet's inputs (latents, sinusoidal timestep features) and its output FP.

Numbers are simulated ("fake") quantization in float32: nothing here runs a low-bit kernel, so the sampling
times measure the cost of simulating quantization on the CPU, not the speed of a real low-bit generator; the
model size (bits x parameters) is what a low-bit deployment would store.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from genqlib.quant import (
    ENGINE,
    ActQuantizer,
    QuantConfig,
    QuantModel,
    ReconConfig,
    calibrating,
    fp_weight,
    quantize,
    reconstruct,
)
from genqlib.quant.quantizer import (
    LP_NORM,
    clip_ratios,
    grad_scale,
    int_range,
    random_select,
    round_ste,
)

METHODS = ("ptq", "quest")
WIDTHS = ((8, 8), (4, 8), (4, 4))
TRAIN_TIMESTEPS = 1000
GROUP_INIT_ELEMENTS = 1 << 15  # per-group step search subsample (the engine's per-tensor search: 1 << 18)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class GenQuantConfig:
    """How to quantize a generator; see the module docstring for why each default."""

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
    lr: float = 1e-4
    batch_size: int = 32
    align_weight: float = 1.0
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
        QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits)  # checks the widths

    @property
    def tag(self) -> str:
        return f"{self.method}-W{self.w_bits}A{self.a_bits}" + ("-te" if self.text_encoder else "")

    def record(self) -> dict:
        """What the manifest stores: the settings, without the ones the chosen method does not use."""
        out = asdict(self)
        if self.method == "ptq":
            for name in ("n_groups", "iters_time", "iters_attn", "lr", "batch_size", "align_weight"):
                out.pop(name)
        if self.ptq_recon == "nearest":
            out.pop("recon_iters")
        return out


# ---------------------------------------------------------------- time-aware activation quantizer


def timestep_group(
    t: torch.Tensor | float, n_groups: int, train_steps: int = TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Group index (0 = least noisy) of each timestep: equal parts of the training range [0, train_steps)."""
    t = torch.as_tensor(t).float().flatten()
    return (t * n_groups / train_steps).floor().long().clamp(0, n_groups - 1)


@torch.no_grad()
def search_step(x: torch.Tensor, bits: int, signed: bool, chunk: int = 10) -> torch.Tensor:
    """``quantizer.search_symmetric`` (the same clipping ratios and Lp error) on a seeded subsample of at most
    ``GROUP_INIT_ELEMENTS`` elements, the ratios evaluated ``chunk`` at a time: a time-aware quantizer runs the
    search once per group, and the Lp error's non-integer power dominates calibration time on the CPU."""
    n, p = int_range(bits, signed)
    top = x.abs().max()
    x = x.flatten()
    if x.numel() > GROUP_INIT_ELEMENTS:
        gen = torch.Generator().manual_seed(0)
        x = x[torch.randint(x.numel(), (GROUP_INIT_ELEMENTS,), generator=gen).to(x.device)]
    steps = (top * clip_ratios().to(x.device) / p).clamp(min=1e-8)
    errors = []
    for s in steps.split(chunk):
        xq = torch.clamp(torch.round(x[None] / s[:, None]), n, p) * s[:, None]
        errors.append((x[None] - xq).abs().pow(LP_NORM).mean(-1))
    return steps[torch.cat(errors).argmin()]


class TimeClock:
    """The timestep group the UNet is running at, shared by all time-aware quantizers of one model."""

    def __init__(self, n_groups: int, train_steps: int = TRAIN_TIMESTEPS) -> None:
        self.n_groups, self.train_steps = n_groups, train_steps
        self.group: int | None = None

    def set(self, timestep) -> int:
        groups = timestep_group(timestep, self.n_groups, self.train_steps).unique()
        if len(groups) != 1:
            raise ValueError(
                f"one UNet call spans timestep groups {groups.tolist()}: call it on one group at a time"
            )
        self.group = int(groups[0])
        return self.group

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """UNet forward pre-hook: read the ``timestep`` argument (second positional or keyword)."""
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        if t is None:
            raise ValueError("the UNet was called without a timestep: the time-aware quantizers need one")
        self.set(t)


class TimeAwareActQuantizer(ActQuantizer):
    """Per-tensor activation quantizer with one step size (and sign) per timestep group, picked by ``clock``.

    ``calibrate(x)`` (and ``calibrating(...)``) set the step of the clock's current group only.
    """

    def __init__(self, bits: int, clock: TimeClock) -> None:
        super().__init__(bits)
        self._init_groups(clock)

    def _init_groups(self, clock: TimeClock) -> None:
        self.clock = clock
        n = clock.n_groups
        self.group_step = nn.Parameter(self.step.detach().repeat(n).clone(), requires_grad=False)
        self.register_buffer("group_signed", self.signed.detach().repeat(n).clone())
        self.register_buffer("group_calibrated", self.calibrated.detach().repeat(n).clone())

    @classmethod
    def convert(cls, quantizer: ActQuantizer, clock: TimeClock) -> TimeAwareActQuantizer:
        """Turn ``quantizer`` into a time-aware one in place (every hook that applies it keeps applying it),
        each group starting from its current step size."""
        quantizer.__class__ = cls
        quantizer._init_groups(clock)
        return quantizer

    def _group(self) -> int:
        if self.clock.group is None:
            raise RuntimeError("no timestep group set: run the quantized UNet (its pre-hook sets the clock)")
        return self.clock.group

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        g = self._group()
        self.group_signed[g] = bool(x.min() < 0)
        self.group_step[g] = search_step(x.detach().float(), self.bits, bool(self.group_signed[g]))
        self.group_calibrated[g] = True
        self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        g = self._group()
        if not self.group_calibrated[g]:
            if not self.auto_calibrate:
                raise RuntimeError(f"time-aware activation quantizer: timestep group {g} is not calibrated")
            self.calibrate(x)
        n, p = int_range(self.bits, bool(self.group_signed[g]))
        step = grad_scale(self.group_step[g], 1.0 / math.sqrt(x[0].numel() * p))
        if torch.is_grad_enabled():
            xq = round_ste(torch.clamp(x / step, n, p)) * step
        else:
            xq = torch.clamp(x / step, n, p).round_().mul_(step)
        if self.drop_prob > 0:
            xq = random_select(self.drop_prob, x, xq)
        return xq

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {self.clock.n_groups} timestep groups, enabled={self.enabled}"


def make_time_aware(qmodel: QuantModel, n_groups: int) -> TimeClock:
    """Convert every activation quantizer of ``qmodel`` (a quantized UNet) to a time-aware one sharing one
    clock, set by a forward pre-hook on the UNet; returns the clock (also at ``qmodel.clock``)."""
    clock = TimeClock(n_groups)
    for q in {id(q): q for q in qmodel.acts.values()}.values():
        TimeAwareActQuantizer.convert(q, clock)
    qmodel.model.register_forward_pre_hook(clock.hook, with_kwargs=True)
    qmodel.clock = clock
    return clock


def group_rows(t: torch.Tensor, n_groups: int) -> dict[int, torch.Tensor]:
    """Row indices of each timestep group present in ``t``."""
    groups = timestep_group(t, n_groups)
    return {int(g): (groups == g).nonzero().flatten() for g in groups.unique()}


@torch.no_grad()
def calibrate_groups(qmodel: QuantModel, calib: tuple, n_groups: int, rows_per_group: int = 256) -> None:
    """Lp-search every time-aware quantizer's step for each timestep group on that group's calibration rows."""
    quantizers = list({id(q): q for q in qmodel.acts.values()}.values())
    for g, idx in group_rows(calib[1], n_groups).items():
        for q in quantizers:
            q.group_calibrated[g] = False
        idx = idx[:rows_per_group]
        with calibrating(qmodel, quantizers):
            qmodel(*(a[idx] for a in calib))


# ---------------------------------------------------------------- calibration trajectories


def record_unet_inputs(pipe, run, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``run(*args, **kwargs)`` (anything that samples with ``pipe``) and return every UNet call's inputs as
    batch-first (latents, timesteps, text embeddings), the guidance batch included, on the CPU."""
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def hook(module, a, kw):
        sample = a[0]
        t = a[1] if len(a) > 1 else kw["timestep"]
        emb = a[2] if len(a) > 2 else kw["encoder_hidden_states"]
        t = torch.as_tensor(t).flatten().expand(len(sample)) if torch.as_tensor(t).numel() == 1 else t
        rows.append((sample.detach().float().cpu(), t.detach().long().cpu(), emb.detach().float().cpu()))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run(*args, **kwargs)
    finally:
        handle.remove()
    return tuple(torch.cat([r[i] for r in rows]) for i in range(3))


def trajectory_inputs(
    pipe,
    classes: Sequence[int],
    per_class: int,
    *,
    steps: int,
    guidance_scale: float = 3.5,
    seed: int = 0,
    rows: int | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QuEST's data-free calibration set: UNet inputs along the FP pipeline's own trajectories for ``per_class``
    label prompts per class (seed ``seed`` offset so they never share a trajectory with a generated set of
    seed ``seed``), ``rows`` of them kept at random (all when None)."""
    from genqlib.generate import generate

    kwargs = {"class_names": class_names} if class_names is not None else {}
    with tempfile.TemporaryDirectory(prefix="genq_traj_") as tmp:
        data = record_unet_inputs(
            pipe,
            generate,
            pipe,
            list(classes),
            per_class,
            out=Path(tmp) / "set",
            guidance_scale=guidance_scale,
            steps=steps,
            seed=seed + 1_000_003,
            batch_size=batch_size,
            progress=False,
            **kwargs,
        )
    if rows is not None and rows < len(data[0]):
        pick = torch.randperm(len(data[0]), generator=torch.Generator().manual_seed(seed))[:rows]
        data = tuple(a[pick] for a in data)
    return data


# ---------------------------------------------------------------- selective finetuning


def time_layers(qmodel: QuantModel) -> list[str]:
    """QuEST's first stage: the time-embedding MLP and every block's projection of it."""
    return [n for n in qmodel.layer_names if n.startswith("time_embedding.") or n.endswith("time_emb_proj")]


def attention_layers(qmodel: QuantModel) -> list[str]:
    """QuEST's second stage: q, k, v and output projections of the self- and cross-attention."""
    ends = ("to_q", "to_k", "to_v", "to_out.0")
    return [n for n in qmodel.layer_names if (".attn1." in n or ".attn2." in n) and n.endswith(ends)]


def _capture(model: nn.Module, names: list[str], store: dict) -> list:
    def hook(name):
        def fn(module, args, out):
            store[name] = out

        return fn

    return [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]


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
    outputs against the FP model's same layers. Each step draws ``batch_size`` rows of one timestep group.
    Returns the loss every step."""
    if iters <= 0 or not layers:
        return []
    qmodel.eval().requires_grad_(False)
    fp_unet.eval().requires_grad_(False)
    params = []
    for name in layers:
        layer = qmodel.model.get_submodule(name)
        params.append(fp_weight(layer))
        if getattr(layer, "bias", None) is not None:
            params.append(layer.bias)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)
    groups = [idx for idx in group_rows(calib[1], n_groups).values()]
    q_out, f_out = {}, {}
    handles = _capture(qmodel.model, layers, q_out) + _capture(fp_unet, layers, f_out)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    try:
        for _ in range(iters):
            rows = groups[int(torch.randint(len(groups), (1,), generator=gen))]
            idx = rows[torch.randperm(len(rows), generator=gen)[: cfg.batch_size]]
            args = tuple(a[idx] for a in calib)
            with torch.no_grad():
                target = fp_unet(*args, return_dict=False)[0]
            out = qmodel(*args)
            task = (out - target).pow(2).mean()
            align = sum(
                (q_out[n] - f_out[n]).pow(2).mean() / f_out[n].pow(2).mean().clamp(min=1e-12) for n in layers
            ) / len(layers)
            loss = task + cfg.align_weight * align
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


# ---------------------------------------------------------------- building a quantized generator


def calibrated_unet(unet: nn.Module, calib: tuple, cfg: GenQuantConfig) -> QuantModel:
    """Plain PTQ: a quantized copy of ``unet`` with every activation step size from the Lp search on the first
    256 rows of ``calib`` (all timesteps together): the common start of both methods."""
    qmodel = _structure(unet, calib, cfg)
    init = min(len(calib[0]), 256)
    reconstruct(qmodel, unet, calib, ReconConfig(method="nearest", init_size=init, progress=False))
    return qmodel


def quantize_unet(
    unet: nn.Module, calib: tuple, cfg: GenQuantConfig, base: QuantModel | None = None
) -> QuantModel:
    """A quantized copy of ``unet`` calibrated (and, for quest, finetuned) on ``calib`` (latents, t, emb).
    ``base``: ``calibrated_unet(unet, calib, cfg)`` already computed (used, not copied)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        qmodel = base if base is not None else calibrated_unet(unet, calib, cfg)
        if cfg.method == "ptq" and cfg.ptq_recon == "brecq":
            recon = ReconConfig(method="brecq", iters=cfg.recon_iters, seed=cfg.seed, progress=False)
            reconstruct(qmodel, unet, calib, recon)
        qmodel.finetune_log = {}
        if cfg.method == "quest":
            make_time_aware(qmodel, cfg.n_groups)  # every group starts from the step calibrated on all rows
            calibrate_groups(qmodel, calib, cfg.n_groups)
            for stage, layers, iters in (
                ("time", time_layers(qmodel), cfg.iters_time),
                ("attention", attention_layers(qmodel), cfg.iters_attn),
            ):
                losses = finetune(qmodel, unet, calib, layers, iters, cfg, cfg.n_groups)
                qmodel.finetune_log[stage] = {"layers": len(layers), "losses": losses}
    return qmodel


def _structure(unet: nn.Module, calib: tuple, cfg: GenQuantConfig) -> QuantModel:
    """The quantized UNet before calibration."""
    example = tuple(a[:2] for a in calib)
    return quantize(unet, QuantConfig(w_bits=cfg.w_bits, a_bits=cfg.a_bits), example=example)


def quantize_text_encoder(pipe, prompts: Sequence[str], cfg: GenQuantConfig) -> QuantModel:
    """The pipeline's text encoder quantized like the UNet and calibrated on the token ids of ``prompts``."""
    ids = _token_ids(pipe, prompts)
    qmodel = quantize(pipe.text_encoder, QuantConfig(w_bits=cfg.w_bits, a_bits=cfg.a_bits), example=ids[:2])
    reconstruct(qmodel, pipe.text_encoder, ids, ReconConfig(method="nearest", init_size=256, progress=False))
    return qmodel


def _token_ids(pipe, prompts: Sequence[str]) -> torch.Tensor:
    tok = pipe.tokenizer
    return tok(
        list(prompts), padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
    ).input_ids


def model_bits(model: nn.Module) -> dict:
    """Weight storage: quantized weights at their bit width, every other parameter and buffer at 32 bits, the
    quantizers' step sizes and zero points (a few per channel or tensor) included. ``params``: the model's own
    parameters (quantizer parameters not counted)."""
    from genqlib.quant import WeightQuantizer
    from genqlib.quant.layers import is_quantized, weight_quantizer

    quantized, overhead, bits = set(), set(), 0
    for m in model.modules():
        if is_quantized(m):
            w = fp_weight(m)
            quantized.add(id(w))
            bits += w.numel() * weight_quantizer(m).bits
        if isinstance(m, (WeightQuantizer, ActQuantizer)):
            overhead |= {id(p) for p in m.parameters()}
    params = sum(p.numel() for p in model.parameters() if id(p) not in overhead)
    other = sum(p.numel() for p in model.parameters() if id(p) not in quantized)
    other += sum(b.numel() for b in model.buffers())
    total = bits + 32 * other
    return {"params": params, "bits": total, "megabytes": total / 8 / 1e6}


class QuantGenerator:
    """A quantized UNet (and text encoder) with its config, calibration facts and the id its images carry."""

    def __init__(self, unet: QuantModel, cfg: GenQuantConfig, base_id: str, text: QuantModel | None = None):
        self.unet, self.cfg, self.base_id, self.text = unet, cfg, base_id, text
        digest = hashlib.sha256()
        for model in (unet, text):
            if model is None:
                continue
            for name, t in sorted(model.state_dict().items()):
                digest.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
        self.digest = digest.hexdigest()[:16]

    @property
    def id(self) -> str:
        return f"{self.base_id}+{self.cfg.tag}@{self.digest}"

    def record(self) -> dict:
        return {"base": self.base_id, **self.cfg.record(), "digest": self.digest, "engine": ENGINE}


def quantized_pipeline(pipe, gen: QuantGenerator):
    """A pipeline of ``pipe``'s class sharing its VAE, tokenizer and scheduler, with the quantized UNet (and text
    encoder); ``pipeline_id`` of it is ``gen.id`` and ``generate()`` records ``gen.record()`` in its key."""
    comps = dict(pipe.components)
    comps["unet"] = gen.unet.model
    if gen.text is not None:
        comps["text_encoder"] = gen.text.model
    out = type(pipe)(**comps)
    out.register_to_config(_name_or_path=gen.id)
    out.set_progress_bar_config(disable=True)
    out.genq_quant = gen.record()
    out.to(pipe.device)
    return out


def build_generator(
    pipe,
    cfg: GenQuantConfig,
    calib: tuple,
    prompts: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    base: Callable[[], QuantModel] | None = None,
):
    """``(quantized pipeline, QuantGenerator, seconds to build)`` for ``cfg``; with ``cache_dir`` the built
    state is saved there (keyed by the FP generator, the config, the calibration data and ENGINE) and reused.
    ``base``: returns a fresh ``calibrated_unet`` for ``cfg`` (e.g. a copy of one shared by ptq and quest)."""
    from genqlib.experiments import tensor_digest
    from genqlib.generate import pipeline_id

    base_id = pipeline_id(pipe)
    key = {"base": base_id, "config": asdict(cfg), "calib": tensor_digest(*calib), "engine": ENGINE}
    path = None
    if cache_dir is not None:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{cfg.tag}-{name}.pt"
    start = time.perf_counter()
    if path is not None and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        unet = _structure(pipe.unet, calib, cfg)
        if cfg.method == "quest":
            make_time_aware(unet, cfg.n_groups)
        unet.load_state_dict(saved["unet"])
        text = None
        if cfg.text_encoder:
            example = _token_ids(pipe, prompts)[:2]
            text = quantize(
                pipe.text_encoder, QuantConfig(w_bits=cfg.w_bits, a_bits=cfg.a_bits), example=example
            )
            text.load_state_dict(saved["text"])
        seconds = saved["seconds"]
    else:
        unet = quantize_unet(pipe.unet, calib, cfg, base() if base is not None else None)
        text = quantize_text_encoder(pipe, prompts, cfg) if cfg.text_encoder else None
        seconds = time.perf_counter() - start
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {"unet": unet.state_dict(), "seconds": seconds}
            if text is not None:
                state["text"] = text.state_dict()
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
    gen = QuantGenerator(unet, cfg, base_id, text)
    return quantized_pipeline(pipe, gen), gen, seconds


# ---------------------------------------------------------------- the notebook's comparison


GQ_DEFAULTS: dict[str, dict] = {
    "ci": {"widths": [(4, 4)], "n_per_class": 2, "calib_per_class": 1, "calib_rows": 64, "iters": 2},
    "paper-smoke": {"widths": [(4, 4)], "n_per_class": 2, "calib_per_class": 1, "calib_rows": 16, "iters": 1},
    "mini": {
        "widths": list(WIDTHS),
        "n_per_class": 100,
        "calib_per_class": 8,
        "calib_rows": 1024,
        "iters": 200,
    },
    "paper": {
        "widths": list(WIDTHS),
        "n_per_class": 3,
        "calib_per_class": 2,
        "calib_rows": 1024,
        "iters": 200,
    },
}


def gq_settings(profile, **overrides) -> dict:
    """GQ_DEFAULTS for ``profile`` with ``overrides`` (None values ignored)."""
    settings = dict(GQ_DEFAULTS[profile.name])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["widths"] = [tuple(w) for w in settings["widths"]]
    return settings


def generator_quant(
    pipe,
    model: nn.Module,
    teacher: str,
    profile,
    test,
    work_dir: str | Path,
    bits: tuple[int, int],
    method: str,
    iters: int,
    widths: Sequence[tuple[int, int]] | None = None,
    n_per_class: int | None = None,
    calib_per_class: int | None = None,
    calib_rows: int | None = None,
    finetune_iters: int | None = None,
    methods: Sequence[str] = METHODS,
    text_encoder: bool = False,
) -> dict:
    """FP, plain PTQ and QuEST generators at each width: sets of ``n_per_class`` images each, their class
    fidelity and BN distance under ``teacher``, sampling seconds, UNet size, and the downstream PTQ top-1 of
    ``teacher`` at ``bits`` (``method``, ``iters`` per block) calibrated on each set's GenQ-filtered images."""
    from genqlib.ablations import _ptq
    from genqlib.datasets import class_names, run_classes
    from genqlib.experiments import filtered_view, first_per_class
    from genqlib.filters import batchnorm_layers
    from genqlib.generate import generate, pipeline_id
    from genqlib.metrics import class_fidelity, set_bn_distance
    from genqlib.store import MANIFEST, SyntheticSet
    from genqlib.zoo import teacher_tag

    s = gq_settings(
        profile,
        widths=widths,
        n_per_class=n_per_class,
        calib_per_class=calib_per_class,
        calib_rows=calib_rows,
        iters=finetune_iters,
    )
    work_dir = Path(work_dir)
    classes, names = list(run_classes(profile)), class_names(profile)
    calib = trajectory_inputs(
        pipe,
        classes,
        s["calib_per_class"],
        steps=profile.gen_steps,
        guidance_scale=profile.guidance_scale,
        seed=profile.seed,
        rows=s["calib_rows"],
        class_names=names,
        batch_size=profile.gen_batch_size,
    )
    prompts = [f"a photo of a {n}" for n in names]
    generators = [("fp", None, None)]
    for w, a in s["widths"]:
        for m in methods:
            cfg = GenQuantConfig(
                w_bits=w,
                a_bits=a,
                method=m,
                text_encoder=text_encoder,
                calib_per_class=s["calib_per_class"],
                calib_rows=s["calib_rows"],
                iters_time=s["iters"],
                iters_attn=s["iters"],
                seed=profile.seed,
            )
            generators.append((m, (w, a), cfg))
    bases: dict[tuple[int, int], tuple[QuantModel, float]] = {}
    reused: list[float] = []  # seconds of a shared start the current build copied instead of computing

    def shared_base(cfg: GenQuantConfig) -> Callable[[], QuantModel]:
        def make() -> QuantModel:  # one quantize + Lp calibration per width, copied for each method
            key = (cfg.w_bits, cfg.a_bits)
            if key in bases:
                reused.append(bases[key][1])
            else:
                start = time.perf_counter()
                bases[key] = (calibrated_unet(pipe.unet, calib, cfg), time.perf_counter() - start)
            return copy.deepcopy(bases[key][0])

        return make

    has_bn = bool(batchnorm_layers(model))
    rows, samples = [], {}
    fp_bits = model_bits(pipe.unet)
    for m, width, cfg in generators:
        build_seconds, finetune_log = 0.0, None
        if cfg is None:
            gpipe, size = pipe, fp_bits
        else:
            gpipe, gen, build_seconds = build_generator(
                pipe, cfg, calib, prompts, work_dir / "gen_quant", shared_base(cfg)
            )
            build_seconds += sum(reused)  # every build is charged its full quantize + calibrate time
            reused.clear()
            size = model_bits(gen.unet)
            finetune_log = {k: v["losses"][-1:] for k, v in getattr(gen.unet, "finetune_log", {}).items()}
        folder = work_dir / "gen_quant" / "sets" / _safe(f"{profile.name}-{pipeline_id(gpipe)}")
        before = len(SyntheticSet.open(folder)) if (folder / MANIFEST).is_file() else 0
        start = time.perf_counter()
        synthetic = generate(
            gpipe,
            classes,
            s["n_per_class"],
            out=folder,
            guidance_scale=profile.guidance_scale,
            steps=profile.gen_steps,
            seed=profile.seed,
            batch_size=profile.gen_batch_size,
            class_names=names,
            progress=False,
        )
        seconds = _timing(folder, len(synthetic) - before, time.perf_counter() - start) * len(synthetic)
        images = synthetic.images(size=profile.image_size, channels=profile.image_channels)
        fidelity = class_fidelity(model, images, synthetic.labels)["class_fidelity"]
        bn = (
            set_bn_distance(model, images, min(100, len(images)), seed=profile.seed)["mean"]
            if has_bn
            else None
        )
        view = filtered_view(model, synthetic, profile, f"genq-{teacher_tag(teacher)}")
        calib_images = view.images(size=profile.image_size, channels=profile.image_channels)
        source = _safe(f"gq-{m}" + (f"-W{width[0]}A{width[1]}" if width else ""))
        ptq = _ptq(model, teacher, calib_images, source, bits, profile, method, iters, test, work_dir)
        samples[source] = images[first_per_class(synthetic.labels, len(classes))]
        rows.append(
            {
                "method": m,
                "w_bits": width[0] if width else 32,
                "a_bits": width[1] if width else 32,
                "generator": pipeline_id(gpipe),
                "n_images": len(synthetic),
                "class_fidelity": fidelity,
                "bn_distance": bn,
                "n_calib": len(calib_images),
                "downstream_top1": ptq["top1"],
                "downstream_agreement": ptq["agreement"],
                "seconds": seconds,
                "seconds_per_1000": seconds / len(synthetic) * 1000,
                "build_seconds": build_seconds,
                "unet_params": size["params"],
                "unet_megabytes": size["megabytes"],
                "finetune_final_loss": finetune_log,
            }
        )
    return {
        "teacher": teacher,
        "downstream": {"w_bits": bits[0], "a_bits": bits[1], "method": method, "iters": iters},
        "settings": {k: [list(w) for w in v] if k == "widths" else v for k, v in s.items()},
        "calib_rows": len(calib[0]),
        "threads": torch.get_num_threads(),
        "simulated": "fake quantization in float32 on the CPU: no low-bit kernel, times are not a speed-up",
        "rows": rows,
        "samples": samples,
    }


def _timing(folder: Path, n_new: int, seconds: float) -> float:
    """Seconds per image of the set in ``folder``: measured now when images were made, else as recorded."""
    path = folder.parent / f"{folder.name}.timing.json"
    if n_new > 0:
        path.write_text(json.dumps({"seconds_per_image": seconds / n_new, "n": n_new}))
        return seconds / n_new
    return json.loads(path.read_text())["seconds_per_image"] if path.is_file() else float("nan")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def main(argv: list[str] | None = None) -> None:
    """``python -m genqlib.quest --profile mini --teacher mobilenet --widths 4,8 4,4 ...``: the notebook's
    comparison from the command line; prints one row per generator and writes ``--out`` (JSON)."""
    import argparse

    from genqlib.ablations import ablation_settings
    from genqlib.experiments import eval_split
    from genqlib.generate import load_pipeline
    from genqlib.profiles import get_profile
    from genqlib.zoo import load_teacher

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--teacher", default="mobilenet")
    ap.add_argument("--widths", nargs="+", default=None, help="W,A pairs, e.g. 4,8 4,4")
    ap.add_argument("--bits", default="2,4", help="downstream PTQ widths of the teacher")
    ap.add_argument("--method", default="genie_m", help="downstream PTQ method")
    ap.add_argument("--n-per-class", type=int, default=None)
    ap.add_argument("--calib-per-class", type=int, default=None)
    ap.add_argument("--finetune-iters", type=int, default=None)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    p = get_profile(args.profile)
    widths = [tuple(int(v) for v in w.split(",")) for w in args.widths] if args.widths else None
    res = generator_quant(
        load_pipeline(p.generator),
        load_teacher(args.teacher),
        args.teacher,
        p,
        eval_split(p),
        Path(args.work_dir or p.work_dir),
        tuple(int(v) for v in args.bits.split(",")),
        args.method,
        ablation_settings(p)["iters"],
        widths=widths,
        n_per_class=args.n_per_class,
        calib_per_class=args.calib_per_class,
        finetune_iters=args.finetune_iters,
    )
    res.pop("samples")
    cols = [
        "method",
        "w_bits",
        "a_bits",
        "class_fidelity",
        "bn_distance",
        "downstream_top1",
        "seconds_per_1000",
    ]
    cols += ["build_seconds", "unet_megabytes"]
    print(" ".join(cols))
    for row in res["rows"]:
        print(" ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
