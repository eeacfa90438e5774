"""Calibration data that GenQ is compared with (paper Table 2): real private-set images, Gaussian noise, and
BN-statistics inversion (ZeroQ; Genie-D adds a generator and learnable latents).

Every function returns pixels (N, C, H, W) as the teachers take them (they normalise inside), seeded.

Decisions:

- ``gaussian_noise`` is N(0, 1) *after* the teachers' normalisation, i.e. N(mean, std^2) in pixels
  (the model's ``pixel_stats``), and is not clamped by default: clamping to [0, 1] would move 21% of the values to 0 and 2% to 1
  and so change the statistics that define the baseline (mean +0.09, std 0.81 after normalisation). The
  price: about a quarter of its values lie outside [0, 1], so the 8-bit input quantizer calibrates signed.
- ``bn_inversion`` optimises logits behind a sigmoid, so its images stay valid pixels in [0, 1] like real
  and generated ones (ZeroQ and Genie optimise unconstrained normalised inputs). It starts from
  ``gaussian_noise`` at the model's ``pixel_stats``, clamped into (0, 1).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genqlib.filters import batchnorm_layers, require_batchnorm
from genqlib.infra.progress import tqdm

LOGIT_EPS = 1e-3  # starting pixels are clamped into [eps, 1 - eps] so their logits are finite
BN_BATCH_SIZE = 128  # images bn_inversion optimises together; a set is made batch by batch


@dataclass
class Inversion:
    """Images made by ``bn_inversion`` with their cost and how well they match the BN statistics.

    ``loss_start`` / ``loss_end``: the BN-statistics loss (paper eq. 6) averaged over the optimised batches,
    at the first iteration and for the returned images (the last iteration's forward pass); ``loss_curve``: that
    average at every iteration (where it flattens is where more steps stop paying).
    """

    images: torch.Tensor
    seconds: float
    loss_start: float
    loss_end: float
    settings: dict = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- real data and noise


def pixel_stats(model: nn.Module) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(mean, std) of the pixels that ``model``'s own normalisation maps to zero mean, unit variance: a
    model's (or its first submodule's) ``pixel_mean``/``pixel_std``: per channel for a classifier wrapper, the
    dataset's constants for the mini teachers. A model without them raises: noise drawn at guessed statistics
    would be a different baseline."""
    for module in model.modules():
        if hasattr(module, "pixel_mean") and hasattr(module, "pixel_std"):
            return module.pixel_mean, module.pixel_std
    raise ValueError(
        f"{type(model).__name__} has no pixel_mean/pixel_std: give gaussian_noise the pixel statistics its "
        "normalisation uses (mean=..., std=...)"
    )


def gaussian_noise(
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    *,
    mean: float | torch.Tensor,
    std: float | torch.Tensor,
    clamp: bool = False,
) -> torch.Tensor:
    """Pixels that the teachers' normalisation ``(x - mean) / std`` maps to standard normal noise (ZeroQ's
    starting point and the "Gaussian" baseline); ``clamp=True`` clips them to [0, 1] (see the module doc).
    ``mean``/``std``: floats, or per-channel tensors (C, 1, 1) as ``pixel_stats`` gives for ImageNet models."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    z = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
    x = z * std + mean
    return x.clamp(0, 1) if clamp else x


# ---------------------------------------------------------------- BN-statistics inversion


def bn_statistics_loss(inputs: list[torch.Tensor | None], layers: list[nn.Module]) -> torch.Tensor:
    """Sum over BN layers of ||mu_s - mu||_2 + ||sigma_s - sigma||_2 of each layer's input (paper eq. 6),
    differentiable; the same quantity as ``filters.bn_distance`` (population std, the layer's eps). Layers
    whose input is None (not reached by the forward pass) are left out, as there."""
    terms = []
    for x, bn in zip(inputs, layers, strict=True):
        if x is None:
            continue
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        mean, var = flat.mean(1), flat.var(1, unbiased=False)
        sigma = torch.sqrt(bn.running_var + bn.eps)
        terms.append((mean - bn.running_mean).norm() + (torch.sqrt(var + bn.eps) - sigma).norm())
    return torch.stack(terms).sum()


class _PixelImages(nn.Module):
    """ZeroQ: the images themselves are the parameters, as logits behind a sigmoid."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.logit(start.clamp(LOGIT_EPS, 1 - LOGIT_EPS)))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.logits], "lr": lr}]


class _GenieGenerator(nn.Module):
    """Genie-D: a small generator (GDFQ/Genie layout, sigmoid output in pixels) and one learnable latent per
    image, trained together; Genie uses lr 0.1 for the latents and 0.01 for the generator."""

    def __init__(
        self, n: int, shape: Sequence[int], latent_dim: int = 64, c1: int = 64, c2: int = 32
    ) -> None:
        super().__init__()
        channels, height, width = shape
        if height % 4 or width % 4:
            raise ValueError(f"genie_d needs image sides divisible by 4, got {tuple(shape)}")
        self.init = (height // 4, width // 4)
        self.latents = nn.Parameter(torch.randn(n, latent_dim))
        self.linear = nn.Linear(latent_dim, c1 * self.init[0] * self.init[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(c1),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(c2, channels, 3, padding=1),
        )

    def forward(self) -> torch.Tensor:
        out = self.linear(self.latents).view(len(self.latents), -1, *self.init)
        return torch.sigmoid(self.body(out))

    def param_groups(self, lr: float) -> list[dict]:
        generator = [p for name, p in self.named_parameters() if name != "latents"]
        return [{"params": [self.latents], "lr": lr}, {"params": generator, "lr": lr / 10}]


def _swing(module: nn.Module, args: tuple, gen: torch.Generator) -> tuple:
    """Genie's swing convolution: shift a strided conv's input by up to one pixel (reflect padding)."""
    x = args[0]
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return (padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]],)


def _install_hooks(net: nn.Module, layers: list[nn.Module], inputs: list, swing: torch.Generator | None):
    """Hooks that record each BN layer's input (and swing strided convs when ``swing`` is a generator)."""

    def record(i: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            inputs[i] = args[0]

        return hook

    handles = [layer.register_forward_pre_hook(record(i)) for i, layer in enumerate(layers)]
    if swing is not None:
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
                handles.append(m.register_forward_pre_hook(lambda mod, args: _swing(mod, args, swing)))
    return handles


def _optimise_batch(
    net: nn.Module, layers: list, inputs: list, synth: nn.Module, iters: int, lr: float, bar: tqdm
) -> tuple[torch.Tensor, list[float]]:
    """Adam on one batch's images (or generator and latents); returns the last images and the loss at every
    iteration."""
    opt = torch.optim.Adam(synth.param_groups(lr))
    curve = []
    for it in range(max(iters, 1)):
        x = synth()
        net(x)
        loss = bn_statistics_loss(inputs, layers)
        curve.append(last := loss.item())
        if it < iters:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bar.update(1)
        if it % 20 == 0:
            bar.set_postfix(bn_loss=f"{last:.4g}")
    return x.detach(), curve


def bn_inversion(
    model: nn.Module,
    n: int,
    shape: Sequence[int],
    iters: int = 500,
    lr: float = 0.5,
    batch_size: int = BN_BATCH_SIZE,
    seed: int = 0,
    genie_d: bool = False,
    progress: bool = True,
    batches: Sequence[int] | None = None,
) -> Inversion:
    """``n`` images whose batch statistics at every BN layer's input match the running ones (ZeroQ), batch
    by batch, ``iters`` Adam steps per batch at learning rate ``lr`` (ZeroQ's 500 and 0.5 by default, ZeroQ
    classification/distill_data.py). Deviation: ZeroQ also lowers the rate when the loss stalls
    (``ReduceLROnPlateau``, patience 100); here it stays fixed, which matters only once the loss has flattened.

    ``genie_d=True`` is Genie's data distillation, simplified: a fresh small generator and learnable latents
    per batch (latents at ``lr``, generator at ``lr / 10``, as Genie's 0.1 / 0.01), swing convolution on
    strided convs; without Genie's learning-rate schedules and its input-statistics prior, and with the BN
    loss of eq. 6 (norms, not Genie's squared norms). The returned images are the last iteration's.

    ``batches``: optimise only these batch indices (default all). ZeroQ's batches draw no random numbers, so a
    set made in parts, in any order or process, and joined by ``join_inversions`` is the same set, bit for bit;
    Genie-D's batches share one random stream and run whole.
    """
    if n < 1 or batch_size < 1 or iters < 0:
        raise ValueError(
            f"need n >= 1, batch_size >= 1, iters >= 0; got n={n}, batch_size={batch_size}, iters={iters}"
        )
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    batches = list(range(len(sizes)) if batches is None else batches)
    if genie_d and batches != list(range(len(sizes))):
        raise ValueError("genie_d=True runs every batch: its batches share one random stream")
    if not batches or not all(0 <= b < len(sizes) for b in batches):
        raise ValueError(f"batches must be indices in 0..{len(sizes) - 1}, got {batches}")
    require_batchnorm(model, needed_by="bn_inversion")
    net = copy.deepcopy(model).eval().requires_grad_(False)
    layers = batchnorm_layers(net)
    device = next(net.parameters()).device
    inputs: list = [None] * len(layers)
    swing = torch.Generator().manual_seed(seed) if genie_d else None
    handles = _install_hooks(net, layers, inputs, swing)
    mean, std = pixel_stats(model)
    start_images = gaussian_noise(n, shape, seed, mean=mean, std=std).clamp(0, 1)
    out, curves = [], []
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            bar = tqdm(
                total=len(batches) * max(iters, 1), desc="bn inversion", disable=not progress, leave=False
            )
            for b in batches:
                batch = start_images[b * batch_size : b * batch_size + sizes[b]]
                synth = _GenieGenerator(sizes[b], shape) if genie_d else _PixelImages(batch)
                x, curve = _optimise_batch(net, layers, inputs, synth.to(device), iters, lr, bar)
                out.append(x.cpu())
                curves.append(curve)
            bar.close()
    finally:
        for h in handles:
            h.remove()
    settings = {"method": "genie_d" if genie_d else "zeroq", "n": n, "shape": list(shape), "iters": iters}
    settings |= {"lr": lr, "batch_size": batch_size, "seed": seed}
    if len(batches) < len(sizes):
        settings["batches"] = batches
    return _inversion(torch.cat(out), time.perf_counter() - start, curves, settings)


def _inversion(images: torch.Tensor, seconds: float, curves: list[list[float]], settings: dict) -> Inversion:
    """An ``Inversion`` whose loss curve is the mean over the per-batch ``curves``."""
    mean_curve = [sum(step) / len(step) for step in zip(*curves, strict=True)]
    return Inversion(images, seconds, mean_curve[0], mean_curve[-1], settings, mean_curve)


def join_inversions(parts: Sequence[Inversion]) -> Inversion:
    """The whole set from its parts (``bn_inversion(..., batches=[b])``, one per batch, in batch order): the
    images joined, the seconds summed (compute, not wall time) and the loss curves averaged per batch, as
    ``bn_inversion`` of all batches at once would give them."""
    curves = [p.loss_curve for p in parts for _ in p.settings.get("batches", [0])]
    settings = {k: v for k, v in parts[0].settings.items() if k != "batches"}
    return _inversion(torch.cat([p.images for p in parts]), sum(p.seconds for p in parts), curves, settings)
