"""Model-dependent selection (GenQ sec. 4.1): score synthetic images with the full-precision model, keep the best.

Three scores, all computed with the model in eval mode and without gradients: the energy score (every model),
BN sensitivity (paper eq. 7, models with BatchNorm) and patch-similarity entropy (paper eq. 8-9, transformers).
`select` turns a score into kept indices; `filter_pipeline` chains energy and the model's second stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genqlib.inference import eval_mode
from genqlib.infra.progress import tqdm
from genqlib.logits import logits

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# Patch-entropy grid: 3001 points over [-1.5, 1.5] (step 0.001). Cosine similarities lie in [-1, 1], but
# their KDE does not: a grid over [-1, 1] would cut up to half the mass of images whose similarities pile up
# at 1 (the least diverse ones) and so raise their entropy (-2.2 instead of -3.9 per block, measured).
PATCH_GRID = (-1.5, 1.5, 3001)
MIN_BANDWIDTH_STEPS = 5  # KDE bandwidth floor, in grid steps (0.005 on PATCH_GRID)


# ---------------------------------------------------------------- helpers


@contextmanager
def _scoring(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and no gradients while scoring (train-mode BN would use and overwrite batch statistics)."""
    with eval_mode(model), torch.no_grad():
        param = next(model.parameters(), None)
        yield param.device if param is not None else torch.device("cpu")


def _chunks(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of at most `batch_size` covering range(n); None = one slice."""
    size = max(n, 1) if batch_size is None else batch_size
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _progress(items: Sequence, desc: str) -> Iterator:
    """A progress bar, shown only when there are enough batches to be worth one."""
    return tqdm(items, desc=desc, leave=False, disable=len(items) < 4)


# ---------------------------------------------------------------- energy


def energy(model: nn.Module, images: torch.Tensor, T: float = 1.0, batch_size: int = 256) -> torch.Tensor:
    """Energy E(x) = -T * logsumexp(f(x) / T) of each image (Liu et al. 2020); lower = more in-distribution.

    GenQ's eq. 5 prints -T * sum_i exp(-f_i / T), without the log (and with the exponent's sign flipped): a typo.
    """
    if T <= 0:
        raise ValueError(f"T must be positive, got {T}")
    out = []
    with _scoring(model) as device:
        for part in _progress(_chunks(len(images), batch_size), "energy"):
            f = logits(model(images[part].to(device))).float()
            out.append((-T * torch.logsumexp(f / T, dim=1)).cpu())
    return torch.cat(out) if out else torch.empty(0)


# ---------------------------------------------------------------- BatchNorm statistics


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's BatchNorm layers that keep running statistics (the reference of the BN distance)."""
    return [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.running_mean is not None]


def require_batchnorm(model: nn.Module, needed_by: str = "BN distance and BN sensitivity") -> list[nn.Module]:
    """`batchnorm_layers`, or a ValueError naming the model (and what needed them) when it has none."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            f"{needed_by} needs BatchNorm layers with running statistics, but {type(model).__name__} has none "
            "(a transformer? use patch_entropy for those)"
        )
    return layers


@dataclass
class _BNSums:
    """One BN layer's input: per-image per-channel sums of d and d^2, d = x - running_mean, in float64."""

    s1: torch.Tensor  # (B, C), or (C,) once pooled over images
    s2: torch.Tensor
    count: int  # values summed per image and channel (spatial positions), or in all once pooled
    sigma: torch.Tensor  # (C,) sqrt(running_var + eps)
    eps: float

    def pooled(self) -> _BNSums:
        """The sums over the whole batch."""
        return _BNSums(self.s1.sum(0), self.s2.sum(0), self.count * len(self.s1), self.sigma, self.eps)

    def __add__(self, other: _BNSums) -> _BNSums:
        return _BNSums(self.s1 + other.s1, self.s2 + other.s2, self.count + other.count, self.sigma, self.eps)

    def distance(self) -> torch.Tensor:
        return _layer_distance(self.s1, self.s2, self.count, self.sigma, self.eps)


def _layer_distance(
    s1: torch.Tensor, s2: torch.Tensor, n: int, sigma: torch.Tensor, eps: float
) -> torch.Tensor:
    """||mu_s - mu||_2 + ||sigma_s - sigma||_2 from the sums of d = x - mu over n values (channels last)."""
    mean_d = s1 / n  # = mu_s - mu; centring on mu first keeps the variance free of cancellation
    var = (s2 / n - mean_d.square()).clamp_min(0)
    return mean_d.norm(dim=-1) + (torch.sqrt(var + eps) - sigma).norm(dim=-1)


def _bn_forward(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> dict[int, _BNSums]:
    """Run `x` through `model`, reducing each BN layer's input to `_BNSums` (keyed by index in `layers`)."""
    sums: dict[int, _BNSums] = {}

    def hook_for(index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().double()
            d = x.reshape(x.shape[0], x.shape[1], -1) - module.running_mean.double()[:, None]
            sigma = torch.sqrt(module.running_var.double() + module.eps)
            sums[index] = _BNSums(d.sum(-1), d.square().sum(-1), d.shape[-1], sigma, module.eps)

        return hook

    handles = [layer.register_forward_pre_hook(hook_for(i)) for i, layer in enumerate(layers)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def bn_distance(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> float:
    """D_BN of `images` as one batch (paper eq. 6): sum over BN layers of ||mu_s - mu||_2 + ||sigma_s - sigma||_2.

    mu, sigma = running_mean, sqrt(running_var + eps); mu_s, sigma_s = per-channel mean and population std of
    the layer's input over images and positions, with the same eps (a batch matching the running statistics
    scores 0). Layers the forward pass never reaches are left out. `batch_size` only bounds memory: eval-mode
    activations are per image, so the result is the same for every value.
    """
    layers = require_batchnorm(model)
    if len(images) == 0:
        raise ValueError("bn_distance needs at least one image")
    acc: dict[int, _BNSums] = {}
    with _scoring(model) as device:
        for part in _progress(_chunks(len(images), batch_size), "bn distance"):
            for i, st in _bn_forward(model, layers, images[part].to(device)).items():
                acc[i] = acc[i] + st.pooled() if i in acc else st.pooled()
    return sum(a.distance().item() for a in acc.values())


# ---------------------------------------------------------------- BN sensitivity


def _sensitivity_batches(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive batches; a trailing batch of one image joins the previous one (removing it leaves nothing)."""
    if batch_size is not None and batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (or None for one batch), got {batch_size}")
    parts = _chunks(n, batch_size)
    if len(parts) > 1 and parts[-1].stop - parts[-1].start == 1:
        parts[-2:] = [slice(parts[-2].start, n)]
    return parts


def _batch_sensitivity(stats: list[_BNSums]) -> torch.Tensor:
    """S_i = D_BN(batch) - D_BN(batch without i) for each image, exactly, from one pass's per-image sums."""
    full, leave_one_out = 0.0, 0.0
    for st in stats:
        batch = st.pooled()
        full = full + batch.distance()
        rest = _layer_distance(batch.s1 - st.s1, batch.s2 - st.s2, batch.count - st.count, st.sigma, st.eps)
        leave_one_out = leave_one_out + rest
    return full - leave_one_out


def bn_sensitivity(model: nn.Module, images: torch.Tensor, batch_size: int | None = 64) -> torch.Tensor:
    """BN sensitivity (paper eq. 7) of every image within its batch; larger = the image pulls its batch off the
    running statistics more. Consecutive batches of `batch_size` (None = all images as one batch).

    One forward pass per batch: the batch's and all B leave-one-out means and variances follow exactly from
    per-image sums (O(B) instead of B + 1 passes; `bn_sensitivity_naive` is the reference). A trailing batch of
    one image joins the previous batch; a pool of a single image scores 0. Returns float64.
    """
    layers = require_batchnorm(model)
    if len(images) == 1:
        return torch.zeros(1, dtype=torch.float64)
    out = []
    with _scoring(model) as device:
        for part in _progress(_sensitivity_batches(len(images), batch_size), "bn sensitivity"):
            stats = _bn_forward(model, layers, images[part].to(device))
            out.append(_batch_sensitivity(list(stats.values())).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def bn_sensitivity_naive(model: nn.Module, images: torch.Tensor, batch_size: int | None = 64) -> torch.Tensor:
    """`bn_sensitivity` by definition, with B + 1 forward passes per batch: the reference for tests and benchmarks."""
    require_batchnorm(model)
    if len(images) == 1:
        return torch.zeros(1, dtype=torch.float64)
    out = []
    for part in _progress(_sensitivity_batches(len(images), batch_size), "bn sensitivity (naive)"):
        batch = images[part]
        full = bn_distance(model, batch)
        rest = [bn_distance(model, torch.cat([batch[:i], batch[i + 1 :]])) for i in range(len(batch))]
        out.append(full - torch.tensor(rest, dtype=torch.float64))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


# ---------------------------------------------------------------- patch similarity entropy


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks: what a classifier wrapper's ``transformer_blocks()`` lists (transformers'
    ``encoder.layer``), children of `model.blocks`, else the outermost modules named *Block*."""
    listed = model.transformer_blocks() if callable(getattr(model, "transformer_blocks", None)) else []
    if listed:
        return list(listed)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Module) and len(list(blocks.children())) > 0:
        return list(blocks.children())
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if "Block" in type(module).__name__ and not any(name.startswith(f"{f}.") for f, _ in found):
            found.append((name, module))
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no `blocks` and no module named *Block*: no token outputs"
        )
    return [module for _, module in found]


def _similarity_values(tokens: torch.Tensor) -> torch.Tensor:
    """The strict upper triangle of each image's patch-by-patch cosine-similarity matrix: (B, N(N-1)/2)."""
    unit = F.normalize(tokens.float(), dim=-1)
    sims = unit @ unit.transpose(1, 2)
    rows, cols = torch.triu_indices(sims.shape[1], sims.shape[1], offset=1, device=sims.device)
    return sims[:, rows, cols]


def kde_entropy(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Differential entropy -∫ f log f of a Gaussian KDE of each row of `values`, trapezoid rule on `grid`.

    Bandwidth by Scott's rule as in scipy.stats.gaussian_kde (std with ddof=1, times n^(-1/5)), floored at
    MIN_BANDWIDTH_STEPS grid steps so that identical values score finite (0.5 log(2 pi e h^2) at the floor).
    The density is a binned KDE: each value's mass is split linearly between its two grid neighbours and
    smoothed by FFT, O(n + G log G) per row instead of O(nG); binning widens the kernel variance by at most
    step^2/4 (1% at the floor, 3e-4 at h = 0.03). `grid` must be evenly spaced.
    """
    values = values.double()
    rows, n = values.shape
    size = len(grid)
    lo, step = grid[0].item(), (grid[-1] - grid[0]).item() / (size - 1)  # exact even for a float32 grid
    h = (values.std(dim=1, keepdim=True) * n ** (-0.2)).clamp_min(MIN_BANDWIDTH_STEPS * step)
    pos = ((values - lo) / step).clamp(0, size - 1)
    left = pos.floor().clamp(max=size - 2)
    frac = pos - left
    mass = torch.zeros(rows, size, dtype=torch.float64, device=values.device)
    mass.scatter_add_(1, left.long(), (1 - frac) / n).scatter_add_(1, left.long() + 1, frac / n)
    length = 2 ** math.ceil(math.log2(2 * size))  # zero padding: no wrap-around of the circular convolution
    freq = torch.fft.rfftfreq(length, d=step, dtype=torch.float64, device=values.device)
    gaussian = torch.exp(-2 * math.pi**2 * h.square() * freq.square())  # the kernel's Fourier transform
    f = (torch.fft.irfft(torch.fft.rfft(mass, n=length) * gaussian, n=length)[:, :size] / step).clamp_min(0)
    return -torch.trapezoid(torch.special.xlogy(f, f), dx=step, dim=-1)


def patch_entropy(
    vit: nn.Module, images: torch.Tensor, batch_size: int = 64, num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Patch-similarity entropy (paper eq. 8-9, after PSAQ-ViT) of each image, summed over the transformer
    blocks; higher = more diverse patch similarities = keep.

    For each block's output, drop the first `num_prefix_tokens` tokens (CLS), take the N x N cosine similarities
    of the patch tokens, estimate their density with a Gaussian KDE and integrate -f log f on the fixed grid
    PATCH_GRID (3001 points over [-1.5, 1.5], so the KDE tails past +-1 count). Only the strict upper triangle
    is used: the matrix is symmetric and its diagonal is 1 for every image, so PSAQ-ViT's full matrix adds an
    uninformative spike at 1 (1/N of the mass) and shrinks Scott's bandwidth with duplicated values. PSAQ-ViT
    also hooks the heads-averaged attention output (attn @ v) where we, following GenQ's "output features",
    take the block output; its fixed bandwidth 0.01 and 10-point grid over the batch's [min, max] similarity
    become Scott's rule and PATCH_GRID.
    """
    blocks = transformer_blocks(vit)
    grid = torch.linspace(*PATCH_GRID, dtype=torch.float64)
    per_block: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        tokens = output[0] if isinstance(output, tuple) else output
        if tokens.dim() != 3:
            raise ValueError(
                f"patch_entropy needs (batch, tokens, dim) block outputs; {type(vit).__name__}'s "
                f"{type(module).__name__} gives shape {tuple(tokens.shape)}"
            )
        values = _similarity_values(tokens[:, num_prefix_tokens:].detach())
        per_block.append(kde_entropy(values, grid.to(values.device)).float().cpu())

    out = []
    handles = [block.register_forward_hook(hook) for block in blocks]
    try:
        with _scoring(vit) as device:
            for part in _progress(_chunks(len(images), batch_size), "patch entropy"):
                per_block.clear()
                vit(images[part].to(device))
                out.append(torch.stack(per_block).sum(0))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(out) if out else torch.empty(0)


# ---------------------------------------------------------------- selection


def keep_count(n: int, drop: float) -> int:
    """Images kept when dropping the fraction `drop` of n (the dropped count rounded half up)."""
    return n - math.floor(drop * n + 0.5)


def select(
    scores: torch.Tensor,
    drop: float | None = None,
    threshold: float | None = None,
    classes: torch.Tensor | Sequence[int] | None = None,
    per_class: bool = True,
    higher_is_better: bool = False,
) -> torch.Tensor:
    """Sorted indices of the images kept: drop the worst `drop` fraction (within each class when `per_class` and
    `classes` are given, so the set stays balanced), or every score past `threshold`. Ties keep the earlier index.
    """
    scores = torch.as_tensor(scores)
    if (drop is None) == (threshold is None):
        raise ValueError(f"give exactly one of drop= and threshold= (got drop={drop}, threshold={threshold})")
    if scores.dim() != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {tuple(scores.shape)}")
    if scores.isnan().any():
        raise ValueError("scores contain NaN: select only the images a stage scored")
    if classes is not None:
        classes = torch.as_tensor(classes)
        if classes.shape != scores.shape:
            raise ValueError(f"classes has {len(classes)} entries but scores has {len(scores)}")
    if threshold is not None:
        keep = scores >= threshold if higher_is_better else scores <= threshold
        return keep.nonzero().flatten()
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    if classes is None or not per_class:
        groups = [torch.arange(len(scores))]
    else:
        groups = [(classes == c).nonzero().flatten() for c in classes.unique()]
    kept = []
    for group in groups:
        order = torch.argsort(scores[group], descending=higher_is_better, stable=True)
        kept.append(group[order[: keep_count(len(group), drop)]])
    return torch.cat(kept).sort().values


# ---------------------------------------------------------------- pipeline


@dataclass
class FilterResult:
    """The outcome of `filter_pipeline`: kept indices into the input, each stage's scores over all input images
    (NaN where the stage did not score an image) and the settings used."""

    kept: torch.Tensor
    scores: dict[str, torch.Tensor]
    settings: dict[str, object]


def _second_stage(model: nn.Module, second: str | None) -> str:
    """'bn' for models with BatchNorm, 'patch' otherwise, unless `second` forces one."""
    if second not in (None, "bn", "patch"):
        raise ValueError(f"second must be None, 'bn' or 'patch', got {second!r}")
    has_bn = bool(batchnorm_layers(model))
    if second == "bn" and not has_bn:
        raise ValueError(f"second='bn' needs BatchNorm layers, but {type(model).__name__} has none")
    return second or ("bn" if has_bn else "patch")


def filter_pipeline(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    energy_drop: float = 0.3,
    second_drop: float = 0.3,
    T: float = 1.0,
    batch_size: int = 64,
    per_class: bool = True,
    second: str | None = None,
    seed: int = 0,
) -> FilterResult:
    """GenQ's two-stage filter: drop the highest-energy `energy_drop`, then of the survivors the `second_drop`
    with the largest BN sensitivity (model has BatchNorm) or the lowest patch entropy (otherwise).

    BN sensitivity is defined within a batch (eq. 7) and the paper does not say how batches are formed. We score
    the survivors in batches of `batch_size` drawn at random (seeded), like the mixed calibration batches they
    will join: in generation order one class would fill a batch, and its images would be judged against that
    class's shift from the running statistics instead of a mixed batch's.
    """
    classes = torch.as_tensor(classes)
    if len(classes) != len(images):
        raise ValueError(f"classes has {len(classes)} entries but images has {len(images)}")
    stage = _second_stage(model, second)
    energies = energy(model, images, T=T, batch_size=batch_size)
    survivors = select(energies, drop=energy_drop, classes=classes, per_class=per_class)
    if stage == "bn":
        order = survivors[torch.randperm(len(survivors), generator=torch.Generator().manual_seed(seed))]
        name, second_scores = "bn_sensitivity", bn_sensitivity(model, images[order], batch_size)
    else:
        order = survivors
        name, second_scores = "patch_entropy", patch_entropy(model, images[order], batch_size)
    higher = stage == "patch"  # high entropy = diverse = keep; high BN sensitivity = harmful = drop
    chosen = select(
        second_scores, second_drop, classes=classes[order], per_class=per_class, higher_is_better=higher
    )
    full = torch.full((len(images),), float("nan"), dtype=second_scores.dtype)
    full[order] = second_scores
    settings = {
        "model": type(model).__name__,
        "second": stage,
        "energy_drop": energy_drop,
        "second_drop": second_drop,
        "T": T,
        "batch_size": batch_size,
        "per_class": per_class,
        "seed": seed,
        "n_input": len(images),
        "n_after_energy": len(survivors),
    }
    return FilterResult(
        kept=order[chosen].sort().values, scores={"energy": energies, name: full}, settings=settings
    )


def filter_set(model: nn.Module, synthetic, size: int | None = None, channels: int | None = None, **kwargs):
    """``filter_pipeline`` on a SyntheticSet: a view of the kept images whose ``info`` holds scores and settings.

    ``size``/``channels`` convert the stored images to the classifier's input; other arguments go to
    ``filter_pipeline``. Scores cover every image of ``synthetic`` (NaN where a stage did not score it).
    """
    result = filter_pipeline(
        model, synthetic.images(size=size, channels=channels), synthetic.labels, **kwargs
    )
    scores = {name: values.tolist() for name, values in result.scores.items()}
    return synthetic.subset(result.kept, filter_scores=scores, filter_settings=result.settings)
