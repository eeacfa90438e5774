"""QuEST's time-aware activation quantizer: one step size per timestep group, picked at run time.

The activation ranges of a diffusion UNet change with the timestep (noisy early steps against clean late
ones), so one step size per activation serves no step well. QuEST keeps one per *timestep group*: a forward
pre-hook on the UNet reads its ``timestep`` argument and sets a ``TimeClock`` shared by all quantizers of the
model; each quantizer uses the step of the clock's group.

Groups are equal parts of the *training* timestep range [0, 1000), not of one sampler's steps, so the same
quantizer serves 4- or 50-step sampling (genqlib's choice, see ``GenQuantConfig.n_groups``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genqlib.quant import ActQuantizer, QuantModel, calibrating
from genqlib.quant.quantizer import (
    LP_NORM,
    clip_ratios,
    grad_scale,
    int_range,
    lsq_fake_quant,
    random_select,
)

TRAIN_TIMESTEPS = 1000
GROUP_INIT_ELEMENTS = 1 << 15  # per-group step search subsample (the engine's per-tensor search: 1 << 18)
ROWS_PER_GROUP = 256  # calibration rows each group's Lp search sees at most


def timestep_group(
    t: torch.Tensor | float, n_groups: int, train_steps: int = TRAIN_TIMESTEPS
) -> torch.Tensor:
    """Group index (0 = least noisy) of each timestep: equal parts of the training range [0, train_steps)."""
    t = torch.as_tensor(t).float().flatten()
    return (t * n_groups / train_steps).floor().long().clamp(0, n_groups - 1)


def unet_timestep(args: tuple, kwargs: dict) -> torch.Tensor | float | None:
    """The ``timestep`` argument of a UNet2DConditionModel call (second positional or keyword), else None."""
    return args[1] if len(args) > 1 else kwargs.get("timestep")


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

    def set(self, timestep: torch.Tensor | float) -> int:
        """Set (and return) the group of ``timestep``; every timestep of one call must share a group."""
        groups = timestep_group(timestep, self.n_groups, self.train_steps).unique()
        if len(groups) != 1:
            raise ValueError(
                f"one UNet call spans timestep groups {groups.tolist()}: call it on one group at a time"
            )
        self.group = int(groups[0])
        return self.group

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """UNet forward pre-hook: set the clock from the call's ``timestep``."""
        t = unet_timestep(args, kwargs)
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
        """Lp-search the step of the current group on ``x``."""
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
        xq = lsq_fake_quant(x, step, n, p)
        if self.drop_prob > 0:
            xq = random_select(self.drop_prob, x, xq)
        return xq

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {self.clock.n_groups} timestep groups, enabled={self.enabled}"


def activation_quantizers(qmodel: QuantModel) -> list[ActQuantizer]:
    """Each activation quantizer of ``qmodel`` once (several sites may share one)."""
    return list({id(q): q for q in qmodel.acts.values()}.values())


def make_time_aware(qmodel: QuantModel, n_groups: int) -> TimeClock:
    """Convert every activation quantizer of ``qmodel`` (a quantized UNet) to a time-aware one sharing one
    clock, set by a forward pre-hook on the UNet; returns the clock (also at ``qmodel.clock``)."""
    clock = TimeClock(n_groups)
    for q in activation_quantizers(qmodel):
        TimeAwareActQuantizer.convert(q, clock)
    qmodel.model.register_forward_pre_hook(clock.hook, with_kwargs=True)
    qmodel.clock = clock
    return clock


def group_rows(t: torch.Tensor, n_groups: int) -> dict[int, torch.Tensor]:
    """Row indices of each timestep group present in ``t``."""
    groups = timestep_group(t, n_groups)
    return {int(g): (groups == g).nonzero().flatten() for g in groups.unique()}


@torch.no_grad()
def calibrate_groups(
    qmodel: QuantModel, calib: tuple, n_groups: int, rows_per_group: int = ROWS_PER_GROUP
) -> None:
    """Lp-search every time-aware quantizer's step for each timestep group on that group's calibration rows
    (at most ``rows_per_group`` of them). QuEST calibrates the activation steps before finetuning and keeps
    them fixed during it: the finetuning makes the weights robust to them, it does not retune them."""
    quantizers = activation_quantizers(qmodel)
    for g, idx in group_rows(calib[1], n_groups).items():
        for q in quantizers:
            q.group_calibrated[g] = False
        idx = idx[:rows_per_group]
        with calibrating(qmodel, quantizers):
            qmodel(*(a[idx] for a in calib))
