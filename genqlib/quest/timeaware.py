"""QuEST's time-aware activation quantizer: one asymmetric grid per sampler timestep, its step size learned.

The activation ranges of a diffusion UNet change with the timestep, so QuEST keeps one quantizer per timestep
of the calibration trajectories (hatchetProject/QuEST ``qdiff/quant_layer.py``, ``TimewiseUniformQuantizer``:
an ``ActUniformQuantizer`` per entry of ``list_timesteps``, picked by ``set_timestep(t)``). Here a forward
pre-hook on the UNet reads its ``timestep`` argument and sets a ``TimeClock`` shared by all quantizers of the
model; each quantizer uses the row of its parameters for the clock's timestep. A timestep the quantizer was
not built for raises (the reference's ``quantizer_dict[t]`` lookup fails the same way): the quantized UNet
serves the sampler schedule it was calibrated on.

The grid is the reference's ``ActUniformQuantizer`` (``qdiff/quant_layer.py``): asymmetric with a zero point,
``x_q = (clamp(round_ste(x / delta) + z, 0, 2^b - 1) - z) * delta``, ``delta`` a learnable parameter (plain
straight-through gradient, no LSQ scale), ``z`` fixed. Per channel where the reference is ``channel_wise``
(``txt2img.py``: ``if opt.act_bit == 4: aq_params['channel_wise'] = True``): dim 1 of a conv input or of a
(batch, features) input, the last dim of a (batch, tokens, features) input (``init_quantization_scale``);
the attention tensors (batch, heads, tokens, head dim) per last dim, as the reference's '(b h) n d' layout.

Initialisation (``txt2img.py``, ``scale_method='mse'``, ``ActUniformQuantizer.init_quantization_scale``): per
tensor or per channel, the clipping range is the [1 - pct, pct] quantile pair, pct in 0.999, 0.9999, 0.99999,
whose grid has the least mean squared error (RepQ's search). Deviation, named: the reference's search scores
``clamp(round(x / delta), 0, 2^b - 1)`` without adding the zero point (``ActUniformQuantizer.quantize``);
genqlib scores the grid its forward applies.

Self-contained on purpose: ``genqlib.quant``'s activation quantizers are per tensor without timesteps; these
quantizers subclass nothing of it, are placed by ``genqlib.quest.sites`` and switched by their own ``enabled``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PERCENTILES = (0.999, 0.9999, 0.99999)  # qdiff/quant_layer.py ActUniformQuantizer: "RepQ method"
MAX_SEARCH_ELEMENTS = 1 << 20  # elements per channel (or tensor) the search sees at most, seeded subsample
QUANTILE_LIMIT = 1 << 24  # torch.quantile's input size limit
MAX_BITS = 16  # the SD command's --sm_abit 16 (README.md) quantizes the softmax output at 16 bits


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with an identity gradient (``qdiff/quant_layer.py`` ``round_ste``)."""
    return (x.round() - x).detach() + x


def unet_timestep(args: tuple, kwargs: dict) -> torch.Tensor | float | None:
    """The ``timestep`` argument of a UNet2DConditionModel call (second positional or keyword), else None."""
    return args[1] if len(args) > 1 else kwargs.get("timestep")


class TimeClock:
    """The timestep the UNet runs at, as an index into ``timesteps``; shared by every quantizer of one model."""

    def __init__(self, timesteps: Sequence[int]) -> None:
        self.timesteps = [int(t) for t in timesteps]
        self.index_of = {t: i for i, t in enumerate(self.timesteps)}
        self.index: int | None = None
        self.pinned = False  # True: calls leave the index alone (``sites.pinned``)

    def set(self, timestep: torch.Tensor | float) -> int:
        """Set (and return) the index of ``timestep``; every row of one call must share it."""
        values = torch.as_tensor(timestep).flatten().round().long().unique().tolist()
        if len(values) != 1:
            raise ValueError(f"one UNet call spans timesteps {values}: call it on one timestep at a time")
        if values[0] not in self.index_of:
            raise KeyError(
                f"timestep {values[0]} has no quantizer: the quantized UNet was built for {self.timesteps}"
            )
        self.index = self.index_of[values[0]]
        return self.index

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """UNet forward pre-hook: set the clock from the call's ``timestep`` (unless pinned)."""
        if self.pinned:
            return
        t = unet_timestep(args, kwargs)
        if t is None:
            raise ValueError("the UNet was called without a timestep: the time-aware quantizers need one")
        self.set(t)


def channel_dim(ndim: int, layout: str) -> int:
    """The channel dim of a tensor: ``"layer"``: conv input (N, C, H, W) and (N, C) -> 1, tokens (N, L, C) ->
    -1 (reference ``init_quantization_scale``); ``"last"``: attention (N, heads, L, d) -> -1."""
    if layout == "last" or ndim == 3:
        return ndim - 1
    return 1


def param_shape(shape: Sequence[int], channel_wise: bool, layout: str) -> tuple[int, ...]:
    """Shape of one timestep's step size for a tensor of ``shape``: () per tensor, else broadcastable per
    channel."""
    if not channel_wise:
        return ()
    dim = channel_dim(len(shape), layout)
    out = [1] * len(shape)
    out[dim] = shape[dim]
    return tuple(out)


@torch.no_grad()
def percentile_grid(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta, zero point) of each row of ``x`` (rows = channels, or one row per tensor): the quantile range
    [1 - pct, pct] with the least mean squared error among ``PERCENTILES`` (reference ``scale_method='mse'``)."""
    x = x.float()
    cols = min(MAX_SEARCH_ELEMENTS, QUANTILE_LIMIT // len(x))
    if x.shape[1] > cols:
        gen = torch.Generator().manual_seed(0)
        x = x[:, torch.randint(x.shape[1], (cols,), generator=gen).to(x.device)]
    top = 2**bits - 1
    best = None
    for pct in PERCENTILES:
        hi = torch.quantile(x, pct, dim=1)
        lo = torch.quantile(x, 1.0 - pct, dim=1)
        delta = ((hi - lo) / top).clamp(min=1e-8)
        zero = torch.round(-lo / delta)
        xq = (torch.clamp(torch.round(x / delta[:, None]) + zero[:, None], 0, top) - zero[:, None]) * delta[
            :, None
        ]
        err = (x - xq).pow(2).mean(1)
        if best is None:
            best = (err, delta, zero)
        else:
            better = err < best[0]
            best = tuple(
                torch.where(better, new, old) for new, old in zip((err, delta, zero), best, strict=True)
            )
    return best[1], best[2]


class TimeAwareQuantizer(nn.Module):
    """Asymmetric ``bits``-bit activation quantizer with one (delta, zero point) per timestep of ``clock``,
    per tensor or per channel; ``delta`` (shape (T, *param_shape)) learns, the zero point stays fixed.

    ``calibrate(x)`` sets every timestep's grid from ``x`` (the reference copies one initialisation to all
    timesteps, ``txt2img.py``); ``forward`` applies the grid of the clock's timestep.
    """

    def __init__(self, bits: int, clock: TimeClock, shape: Sequence[int], channel_wise: bool, layout: str):
        super().__init__()
        if not 2 <= bits <= MAX_BITS:
            raise ValueError(f"time-aware quantizer bits must be in 2..{MAX_BITS}, got {bits}")
        self.bits, self.channel_wise, self.layout = bits, channel_wise, layout
        self.clock = clock
        self.enabled = True
        self.auto_calibrate = False
        pshape = (len(clock.timesteps), *param_shape(shape, channel_wise, layout))
        self.delta = nn.Parameter(torch.ones(pshape), requires_grad=False)
        self.register_buffer("zero_point", torch.zeros(pshape))
        self.register_buffer("calibrated", torch.tensor(False))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Every timestep's grid from the percentile search on ``x`` (all its rows, whatever their timestep)."""
        if self.channel_wise:
            dim = channel_dim(x.dim(), self.layout)
            rows = x.detach().movedim(dim, 0).flatten(1)
        else:
            rows = x.detach().flatten()[None]
        delta, zero = percentile_grid(rows, self.bits)
        self.delta.copy_(delta.view(self.delta.shape[1:]).expand_as(self.delta))
        self.zero_point.copy_(zero.view(self.zero_point.shape[1:]).expand_as(self.zero_point))
        self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.calibrated:
            if not self.auto_calibrate:
                raise RuntimeError(
                    "time-aware quantizer is not calibrated: run genqlib.quest.init_acts first"
                )
            self.calibrate(x)
        i = self.clock.index
        if i is None:
            raise RuntimeError("no timestep set: run the quantized UNet (its pre-hook sets the clock)")
        delta, zero = self.delta[i], self.zero_point[i]
        x_int = round_ste(x / delta) + zero
        return (torch.clamp(x_int, 0, 2**self.bits - 1) - zero) * delta

    def extra_repr(self) -> str:
        grain = "per channel" if self.channel_wise else "per tensor"
        return f"bits={self.bits}, asymmetric {grain}, {len(self.clock.timesteps)} timesteps"
