"""Quantization-aware training: LSQ, and GenQ's QAT from a PTQ model (paper eq. 13).

``qat(qmodel, fp_model, data, QATConfig(...))`` trains ``qmodel`` in place and returns a ``QATResult`` with
one history entry per epoch. Two modes:

- ``lsq`` (Esser et al. 2020): from a nearest-rounded start (``quantize`` + activation calibration, e.g.
  ``reconstruct(..., ReconConfig(method="nearest"))``), learn every float parameter (weights, biases) and
  every step size. The weight quantizer computes ``s * (clip(round_ste(w / s) + z, 0, p) - z)``, so the
  weights get the straight-through gradient (1 inside the clipping range, 0 outside) and each step size
  LSQ's ``round(w/s) - w/s`` (inside) or the clipped level (outside). Step-size gradients are scaled as in
  LSQ by ``g = 1 / sqrt(N * p)``: N = weights per output channel (the steps are per channel) for weights,
  elements per sample for activations (the activation quantizer applies its own ``g``; the weight scale is
  added here by a gradient hook that is removed afterwards).
- ``genq``: from a reconstructed PTQ model. Weights, biases and the learned rounding V stay frozen; each
  weight quantizer gets an offset ``u`` initialised at zero (``WeightQuantizer.add_offset``), so the
  integer is ``clip(floor(w/s) + sgn(V) + round_ste(u/s) + z)`` and training starts exactly at the PTQ
  model. ``u`` gets the straight-through gradient (``d w_q / d u = 1`` inside the range). The paper freezes
  "all previous learnable variables including w and v"; we read that as the weight side (w, V and the
  weight step s, which also scales the frozen ``floor(w/s)`` grid) and keep learning the activation step
  sizes by LSQ, since the paper's QAT is LSQ-based and nothing else adapts the activation grid
  (``learn_steps="none"`` gives the strictest reading, ``"all"`` also learns the weight steps).

Loss: KL distillation from ``fp_model`` at temperature T (scaled by T^2), or cross-entropy on the prompted
class (hard labels (N,), or soft (N, K) targets such as mixup-prompt class weights). Optimiser, schedule,
weight decay and BatchNorm handling are the mode's ``Recipe`` (``qat_recipe.py``: LSQ's paper for ``lsq``,
GenQ's for ``genq``); a value given in ``QATConfig`` overrides the recipe's. Both are SGD with momentum and
cosine decay to 0 over all steps; learned step sizes are clamped to stay positive (at lr ~0.1 and above SGD
otherwise flips them negative). No data augmentation.

BatchNorm: ``frozen`` (genq) trains in eval mode: a BN-folded model has no statistics to update, and any
BatchNorm left unfolded keeps its running statistics (a warning says so); dropout is off. ``train`` (lsq, as
LSQ fine-tunes its networks) expects a model quantized with ``QuantConfig(fold_bn=False)`` and trains in
train mode: batch statistics, running statistics updated, BN affine parameters learned (a warning says so
when no BatchNorm is left to train); every evaluation runs in eval mode.

Data order depends only on (seed, epoch); a checkpoint per epoch (model, optimiser, scheduler, epoch, RNG,
history) makes an interrupted run resume to the same parameters as an uninterrupted one. The global RNG state
is left untouched.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genqlib.infra.progress import tqdm
from genqlib.infra.result_cache import Checkpoint
from genqlib.logits import logits
from genqlib.quant.layers import fp_weight, weight_quantizer
from genqlib.quant.model import QuantModel
from genqlib.quant.qat_data import data_fingerprint, epoch_order, training_data
from genqlib.quant.qat_recipe import BATCHNORM, RECIPES, Recipe
from genqlib.quant.quantizer import ActQuantizer

MODES = ("lsq", "genq")
LOSSES = ("kd", "ce")
LEARN_STEPS = ("none", "act", "weight", "all")
DEFAULT_STEPS = {"lsq": "all", "genq": "act"}
CHECKPOINT = "qat_checkpoint.pt"
CHECKPOINT_FORMAT = 1
MIN_STEP = 1e-8  # learned step sizes are clamped to stay positive (as the Lp search clamps them)

EvalFn = Callable[[nn.Module], Any]


@dataclass(frozen=True)
class QATConfig:
    """QAT settings. ``lr``, ``momentum``, ``weight_decay`` and ``batchnorm`` left at None take the mode's
    ``Recipe`` (``qat_recipe.RECIPES``: LSQ's paper for lsq, GenQ's for genq); ``learn_steps=None`` means the
    mode's default: ``all`` for lsq, ``act`` for genq."""

    mode: str = "genq"
    epochs: int = 10
    lr: float | None = None  # recipe: genq 1e-3 (GenQ section 5.3), lsq 0.01 (LSQ section 3)
    batch_size: int = 32
    loss: str = "kd"
    temperature: float = 1.0
    momentum: float | None = None  # recipe: 0.9 for both
    # on weights (lsq) or offsets u (genq); never on biases, BatchNorm or step sizes. recipe: genq 0, lsq 1e-4
    # at 4 bits and above, 0.5e-4 at 3, 0.25e-4 at 2 (LSQ section 3.1)
    weight_decay: float | None = None
    batchnorm: str | None = None  # recipe: genq "frozen", lsq "train"
    learn_steps: str | None = None
    seed: int = 0
    checkpoint_dir: str | Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        choices = {"mode": MODES, "loss": LOSSES, "learn_steps": (*LEARN_STEPS, None)}
        choices["batchnorm"] = (*BATCHNORM, None)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"QATConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        checks = {
            "epochs": _is_int(self.epochs) and self.epochs >= 0,
            "batch_size": _is_int(self.batch_size) and self.batch_size >= 1,
            "seed": _is_int(self.seed),
            "lr": self.lr is None or (_is_real(self.lr) and self.lr > 0),
            "temperature": _is_real(self.temperature) and self.temperature > 0,
            "momentum": self.momentum is None or (_is_real(self.momentum) and 0 <= self.momentum < 1),
            "weight_decay": self.weight_decay is None
            or (_is_real(self.weight_decay) and self.weight_decay >= 0),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"QATConfig.{name} out of range: {getattr(self, name)!r}")

    @property
    def steps(self) -> str:
        """Which step sizes learn: none, act, weight or all."""
        return self.learn_steps or DEFAULT_STEPS[self.mode]

    def recipe(self, w_bits: int) -> Recipe:
        """The recipe this config trains with at weight width ``w_bits``: the mode's, each field given here
        replacing the recipe's, the weight decay resolved for ``w_bits`` (``Recipe.weight_decay_at``)."""
        base = RECIPES[self.mode]
        given = {"lr": self.lr, "momentum": self.momentum, "batchnorm": self.batchnorm}
        decay = base.weight_decay_at(w_bits) if self.weight_decay is None else float(self.weight_decay)
        values = {k: v for k, v in given.items() if v is not None}
        return replace(base, **values, weight_decay=decay, decay_by_bits=())

    def key(self) -> dict:
        """The settings that decide the trained model (not where checkpoints go or whether a bar shows): the
        given fields and the mode's recipe (which the bit width resolves)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_dir", "progress")}
        return {**out, "learn_steps": self.steps, "recipe": asdict(RECIPES[self.mode])}


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float | np.number) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class QATResult:
    """What a QAT run did: per-epoch ``history`` (loss, lr, seconds, images_per_s, eval, ...) and more."""

    config: dict
    n_images: int
    recipe: dict = field(default_factory=dict)  # the Recipe it trained with, resolved for its bit width
    history: list[dict] = field(default_factory=list)
    initial_eval: Any = None  # eval_fn(qmodel) before the first step
    resumed_from: int = 0  # epochs read from a checkpoint instead of trained in this call

    @property
    def seconds(self) -> float:
        """Training wall time summed over epochs (evaluation excluded), across resumed calls."""
        return float(sum(h["seconds"] for h in self.history))

    @property
    def images_per_s(self) -> float | None:
        """Training images per second over all epochs."""
        return self.n_images * len(self.history) / self.seconds if self.seconds > 0 else None

    @property
    def final_eval(self) -> Any:
        """The last epoch's eval_fn result (the initial one when no epoch ran)."""
        return self.history[-1].get("eval") if self.history else self.initial_eval

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            **asdict(self),
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "final_eval": self.final_eval,
        }


# ---------------------------------------------------------------- losses


def qat_loss(out: torch.Tensor, target: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at temperature T times T^2 (``kd``, target = FP logits) or cross-entropy (``ce``,
    target = class indices or soft targets)."""
    if kind == "kd":
        t = temperature
        student, teacher = F.log_softmax(out / t, 1), F.log_softmax(target / t, 1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t
    if target.dim() == 2:
        return -(target * F.log_softmax(out, 1)).sum(1).mean()
    return F.cross_entropy(out, target)


# ---------------------------------------------------------------- what learns


def _check_start(qmodel: QuantModel, mode: str) -> None:
    """Refuse starts that the mode cannot train from, with the way to fix it."""
    if not isinstance(qmodel, QuantModel):
        raise TypeError(f"qmodel must be a QuantModel from quantize(...), got {type(qmodel).__name__}")
    if any(isinstance(m, ActQuantizer) and m.enabled and not m.calibrated for m in qmodel.modules()):
        raise ValueError(
            "activation quantizers are not calibrated: run reconstruct(qmodel, fp_model, images, "
            "ReconConfig(method='nearest')) (lsq) or a full reconstruction (genq) before qat"
        )
    if mode == "lsq":
        custom = [n for n, lay in qmodel.layers().items() if weight_quantizer(lay).adaround is not None]
        custom += [n for n, lay in qmodel.layers().items() if weight_quantizer(lay).offset is not None]
        if custom:
            raise ValueError(
                f"QATConfig.mode='lsq' learns the FP weights through nearest rounding, but layers {custom[:3]} "
                "have learned rounding or an offset; use mode='genq' for a reconstructed model"
            )


def _step_params(qmodel: QuantModel, which: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(activation steps, weight steps) that learn under ``which``."""
    acts = [m.step for m in qmodel.modules() if isinstance(m, ActQuantizer) and m.enabled]
    weights = [weight_quantizer(layer).step for layer in qmodel.layers().values()]
    return (acts if which in ("act", "all") else []), (weights if which in ("weight", "all") else [])


def _main_params(qmodel: QuantModel, mode: str, skip: set[int]) -> list[nn.Parameter]:
    """lsq: every float parameter except step sizes; genq: the offsets u (created at zero where missing)."""
    if mode == "lsq":
        return [p for p in qmodel.parameters() if id(p) not in skip]
    offsets = []
    for layer in qmodel.layers().values():
        wq = weight_quantizer(layer)
        offsets.append(wq.offset if wq.offset is not None else wq.add_offset(fp_weight(layer)))
    return offsets


def _param_groups(qmodel: QuantModel, cfg: QATConfig, weight_decay: float) -> list[dict]:
    """SGD groups: weights/offsets (decayed when 2-D or more), biases, BatchNorm and other vectors, steps."""
    acts, wsteps = _step_params(qmodel, cfg.steps)
    every_step = {id(p) for params in _step_params(qmodel, "all") for p in params}
    main = _main_params(qmodel, cfg.mode, every_step)
    groups = [
        {"params": [p for p in main if p.dim() > 1], "weight_decay": weight_decay, "name": "weights"},
        {"params": [p for p in main if p.dim() <= 1], "weight_decay": 0.0, "name": "vectors"},
        {"params": acts + wsteps, "weight_decay": 0.0, "name": "steps"},
    ]
    return [g for g in groups if g["params"]]


def _scale_weight_step_grads(qmodel: QuantModel, steps: list[nn.Parameter]) -> list:
    """LSQ's gradient scale 1 / sqrt(weights per channel * p) on learnable weight steps (hook handles)."""
    wanted = {id(p) for p in steps}
    handles = []
    for layer in qmodel.layers().values():
        wq = weight_quantizer(layer)
        if id(wq.step) in wanted:
            g = 1.0 / math.sqrt(fp_weight(layer)[0].numel() * wq.qmax)
            handles.append(wq.step.register_hook(lambda grad, g=g: grad * g))
    return handles


def _check_batchnorm(qmodel: QuantModel, recipe: Recipe, mode: str) -> None:
    """Warn when the model's BatchNorms do not fit the recipe: unfolded ones under ``frozen`` keep their
    running statistics; under ``train`` (LSQ keeps BN) a model with none left has nothing to train."""
    bns = [m for m in qmodel.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns and recipe.batchnorm == "frozen":
        warnings.warn(
            f"{len(bns)} BatchNorm layer(s) were not folded by quantize; QAT runs them in eval mode "
            "(running statistics frozen)",
            stacklevel=3,
        )
    if not bns and recipe.batchnorm == "train":
        warnings.warn(
            f"QAT mode {mode!r} trains BatchNorm (batchnorm='train'), but the model has none left: quantize "
            "with QuantConfig(fold_bn=False) to keep them, as LSQ does",
            stacklevel=3,
        )


def offset_moved(qmodel: QuantModel) -> float:
    """Fraction of weights whose integer the offset u has changed (round(u / s) != 0); 0 without offsets."""
    moved = total = 0
    for layer in qmodel.layers().values():
        wq = weight_quantizer(layer)
        if wq.offset is not None:
            moved += int((torch.round(wq.offset / wq.step) != 0).sum())
            total += wq.offset.numel()
    return moved / total if total else 0.0


def _keep_positive(optimizer: torch.optim.Optimizer) -> None:
    """Clamp learned step sizes to >= MIN_STEP: a too-large lr must not flip a grid's sign."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            if group.get("name") == "steps":
                for p in group["params"]:
                    p.clamp_(min=MIN_STEP)


# ---------------------------------------------------------------- checkpoints


def _plain(value: Any) -> Any:
    """eval_fn results as plain Python (floats, ints, str, lists, dicts) so checkpoints load weights_only."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return _plain(value.tolist())
    return value


# ---------------------------------------------------------------- training


def _train_epoch(
    qmodel: QuantModel,
    fp_model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: QATConfig,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    bar: tqdm,
    train_bn: bool,
) -> float:
    """One pass over the data in the epoch's order (in train mode when ``train_bn``); returns the mean loss.
    The model is back in eval mode afterwards."""
    device = next(qmodel.parameters()).device
    total = 0.0
    qmodel.train(train_bn)
    for i, idx in enumerate(epoch_order(len(images), cfg.seed, epoch).split(cfg.batch_size)):
        x = images[idx].to(device)
        if cfg.loss == "kd":
            with torch.no_grad():
                target = logits(fp_model(x))
        else:
            target = labels[idx].to(device)
        loss = qat_loss(qmodel(x), target, cfg.loss, cfg.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"QAT loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}; lower QATConfig.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        _keep_positive(optimizer)
        total += loss.item() * len(idx)
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4g}")
    qmodel.eval()
    return total / len(images)


def qat(
    qmodel: QuantModel,
    fp_model: nn.Module,
    data: Any,
    config: QATConfig | None = None,
    eval_fn: EvalFn | None = None,
) -> QATResult:
    """Train ``qmodel`` in place (see the module docstring); ``eval_fn(qmodel)`` runs before training and
    after every epoch. With ``config.checkpoint_dir`` a matching checkpoint there is resumed."""
    cfg = config or QATConfig()
    _check_start(qmodel, cfg.mode)
    images, labels = training_data(data)
    if cfg.loss == "ce" and labels is None:
        raise ValueError("QATConfig.loss='ce' needs labels: pass data=(images, labels)")
    recipe = cfg.recipe(qmodel.config.w_bits)
    _check_batchnorm(qmodel, recipe, cfg.mode)
    device = next(qmodel.parameters()).device
    fp_model.eval()
    qmodel.eval().requires_grad_(False)
    groups = _param_groups(
        qmodel, cfg, recipe.weight_decay
    )  # genq: adds the offsets u (zeros) before any checkpoint loads
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    handles = _scale_weight_step_grads(qmodel, [p for g in groups for p in g["params"]])
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            return _train(qmodel, fp_model, images, labels, cfg, recipe, groups, eval_fn)
    finally:
        for h in handles:
            h.remove()
        qmodel.eval().requires_grad_(False)


def _train(
    qmodel: QuantModel,
    fp_model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: QATConfig,
    recipe: Recipe,
    groups: list[dict],
    eval_fn: EvalFn | None,
) -> QATResult:
    """The epoch loop: the recipe's SGD + per-step cosine decay, resume from and write per-epoch checkpoints."""
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    total_steps = max(cfg.epochs * steps_per_epoch, 1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)  # recipe.schedule
    key = {**cfg.key(), "data": data_fingerprint(images, labels), "format": CHECKPOINT_FORMAT}
    checkpoint = (
        Checkpoint(Path(cfg.checkpoint_dir) / CHECKPOINT, key) if cfg.checkpoint_dir is not None else None
    )
    result = QATResult(config=cfg.key(), n_images=len(images), recipe=asdict(recipe))
    start = _resume(checkpoint, qmodel, optimizer, scheduler, result)
    if start == 0 and eval_fn is not None:
        result.initial_eval = _plain(eval_fn(qmodel))
    total, done = cfg.epochs * steps_per_epoch, start * steps_per_epoch
    train_bn = recipe.batchnorm == "train"
    with tqdm(
        total=total, initial=done, desc=f"qat {cfg.mode}", disable=not cfg.progress, leave=False
    ) as bar:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            loss = _train_epoch(
                qmodel, fp_model, images, labels, cfg, epoch, optimizer, scheduler, bar, train_bn
            )
            entry = _epoch_entry(qmodel, epoch, len(images), loss, time.perf_counter() - t0, scheduler)
            if eval_fn is not None:
                entry["eval"] = _plain(eval_fn(qmodel))
            result.history.append(entry)
            if checkpoint is not None:
                checkpoint.save(_checkpoint(epoch + 1, qmodel, optimizer, scheduler, result))
    return result


def _epoch_entry(qmodel: QuantModel, epoch: int, n: int, loss: float, seconds: float, scheduler) -> dict:
    """One history entry (``seconds`` is training time only; ``offset_moved`` is 0 outside genq)."""
    return {
        "epoch": epoch + 1,
        "loss": loss,
        "lr": scheduler.get_last_lr()[0],
        "seconds": seconds,
        "images_per_s": n / seconds,
        "offset_moved": offset_moved(qmodel),
    }


def _checkpoint(epoch: int, qmodel: QuantModel, optimizer, scheduler, result: QATResult) -> dict:
    return {
        "epoch": epoch,
        "model": qmodel.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": result.history,
        "initial_eval": result.initial_eval,
    }


def _resume(
    checkpoint: Checkpoint | None, qmodel: QuantModel, optimizer, scheduler, result: QATResult
) -> int:
    """Load a matching checkpoint into the run; returns the number of epochs already done (0 without one)."""
    state = checkpoint.load() if checkpoint is not None else None
    if state is None:
        return 0
    qmodel.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.history = list(state["history"])
    result.initial_eval = state["initial_eval"]
    result.resumed_from = state["epoch"]
    return int(state["epoch"])
