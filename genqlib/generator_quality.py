"""Generator diagnostics that depend on no downstream (PTQ) result: pixels, spectra, classes and features.

Everything here takes tensors (images float in [0, 1], shape (N, 1, H, W)), a VAE or a pipeline, and a
teacher; nothing reads a profile, a path convention or the run cache (``genqlib.bench.generator`` and
``genqlib.generator_report`` do that). The measures:

- ``psnr`` / ``ssim``: fidelity of a VAE round trip to the images it encodes;
- ``hf_share`` / ``total_variation``: how much fine detail (weave, print, stitching) a set of images holds,
  to compare generated, real and VAE-round-trip images;
- ``kid`` / ``frechet_distance`` on a teacher's penultimate features (``penultimate_features``), overall
  and per class (``feature_distances``);
- class fidelity and BN distance are ``genqlib.metrics.class_fidelity`` / ``set_bn_distance``, reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from genqlib.filters import batchnorm_layers
from genqlib.metrics import class_fidelity, eval_mode, set_bn_distance

HF_CUTOFF = 0.25  # a quarter of the Nyquist radius


def _per_image(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float; a single (C, H, W) image becomes a batch of one."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    return x.float()


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB, ``10 log10(range^2 / MSE)`` (inf for identical images)."""
    a, b = _per_image(images), _per_image(reference)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image structural similarity (Wang et al. 2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
    K2 = 0.03, population (co)variances, averaged over the valid window positions and the channels; the
    same choices as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``. 1 for identical images."""
    a, b = _per_image(images), _per_image(reference)
    c = a.shape[1]
    window = _gaussian_window().to(a).expand(c, 1, 11, 11)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1)


def radial_frequency(height: int, width: int) -> torch.Tensor:
    """|f| of every bin of an (height, width) FFT, in cycles per pixel (Nyquist = 0.5 on each axis)."""
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.fftfreq(width).view(1, -1)
    return (fx**2 + fy**2).sqrt()


def hf_share(images: torch.Tensor, cutoff: float = HF_CUTOFF) -> torch.Tensor:
    """Per-image share of spectral energy above ``cutoff`` times the Nyquist radius.

    Definition: subtract the image's mean (its DC term carries brightness, not detail), take the 2-D FFT of
    each channel, power ``|F(f)|^2``; the share is the power at bins with radial frequency
    ``|f| = sqrt(fx^2 + fy^2) > cutoff * 0.5`` cycles/pixel, divided by the power at all bins (by Parseval,
    the image's variance times its pixel count). A constant image has no such energy: its share is 0. White
    noise spreads its power evenly over the non-DC bins, so its expected share is the fraction of them
    beyond the radius (0.951 on a 28x28 grid at the default cutoff, ``1 - pi / 64`` in the continuum)."""
    x = _per_image(images)
    x = x - x.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).sum(1)  # channels pooled
    high = radial_frequency(*x.shape[-2:]) > cutoff * 0.5
    total = power.flatten(1).sum(1)
    share = (power * high).flatten(1).sum(1) / total.clamp_min(1e-30)
    return torch.where(total > 1e-12 * x[0].numel(), share, torch.zeros_like(share))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean total variation: mean |x[i+1, j] - x[i, j]| plus mean |x[i, j+1] - x[i, j]|."""
    x = _per_image(images)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def detail_summary(images: torch.Tensor) -> dict:
    """Mean high-frequency share and mean total variation of a set (the two fine-detail measures)."""
    return {
        "hf_share": hf_share(images).mean().item(),
        "total_variation": total_variation(images).mean().item(),
    }


@torch.no_grad()
def vae_round_trip(vae: nn.Module, images: torch.Tensor, pad: int = 2, batch_size: int = 250) -> torch.Tensor:
    """Encode (posterior mean) and decode ``images`` (N, 1, 28, 28) in [0, 1] with ``vae``: zero-padded by
    ``pad`` pixels to the VAE's input size and mapped to [-1, 1] as in training, then clamped and cropped
    back. The posterior mean, not a sample: the VAE's own fidelity, without its noise."""
    out = []
    vae_dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    with eval_mode(vae):
        for start in range(0, len(images), batch_size):
            x = F.pad(images[start : start + batch_size], (pad,) * 4) * 2 - 1
            latents = vae.encode(x.to(device, vae_dtype)).latent_dist.mean
            y = vae.decode(latents).sample.float().cpu()
            out.append(((y + 1) / 2).clamp(0, 1)[..., pad : y.shape[-2] - pad, pad : y.shape[-1] - pad])
    return torch.cat(out)


@torch.no_grad()
def latent_noise(vae: nn.Module, images: torch.Tensor, pad: int = 2) -> dict:
    """How noisy ``vae``'s posterior is: the mean posterior std-dev against the spread (std-dev) of the
    posterior means over ``images`` and latent entries. A KL term that weighs too much keeps the ratio near 1,
    and the decoder, trained on posterior samples, learns to blur."""
    with eval_mode(vae):
        x = F.pad(images, (pad,) * 4) * 2 - 1
        dist = vae.encode(x.to(next(vae.parameters()))).latent_dist
    std, spread = dist.std.mean().item(), dist.mean.std().item()
    return {"posterior_std": std, "latent_spread": spread, "noise_ratio": std / spread}


def vae_fidelity(vae: nn.Module, images: torch.Tensor) -> dict:
    """PSNR and SSIM of ``vae``'s round trip of ``images`` (mean over images) and the fine detail it keeps."""
    recon = vae_round_trip(vae, images)
    return {
        "psnr_db": psnr(recon, images).mean().item(),
        "ssim": ssim(recon, images).mean().item(),
        "n": len(images),
        **{f"round_trip_{k}": v for k, v in detail_summary(recon).items()},
    }


@torch.no_grad()
def penultimate_features(
    model: nn.Module, images: torch.Tensor, layer: nn.Module | None = None, batch_size: int = 100
) -> torch.Tensor:
    """The input of ``layer`` (default ``model.head``, the classifier of every mini-world teacher) for each
    image, flattened to (N, D): the teacher's penultimate features, FID's Inception pool features in small."""
    layer = layer if layer is not None else model.head
    device = next(model.parameters()).device
    grabbed: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, inputs, _o: grabbed.append(inputs[0].flatten(1).cpu()))
    try:
        with eval_mode(model):
            for start in range(0, len(images), batch_size):
                model(images[start : start + batch_size].to(device))
    finally:
        hook.remove()
    return torch.cat(grabbed).double()


def kid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Kernel Inception Distance: the unbiased estimate of the squared MMD between two feature sets under
    the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` (Binkowski et al. 2018, "Demystifying MMD
    GANs", eq. 4 and the kernel of their KID; mbinkowski/MMD-GAN, gan/compute_scores.py, polynomial_mmd).
    Unbiased, so two samples of one distribution give about 0 (it can be slightly negative) at any n,
    unlike FID, whose bias grows as n shrinks: the right distance for a few hundred images per class.
    Computed on all pairs (no subsets)."""
    x, y = features_a.double(), features_b.double()
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {m} and {n}")
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    term_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return (term_x + term_y - 2 * k_xy.mean()).item()


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID's formula on any features: ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``
    (Heusel et al. 2017; the symmetric form of the matrix square root, computed by eigendecomposition in
    float64). Biased upwards at small n, so compare it only between sets of the same size."""
    x, y = features_a.double(), features_b.double()
    mu = x.mean(0) - y.mean(0)
    cov_x, cov_y = torch.cov(x.T), torch.cov(y.T)
    root_x = _sqrtm_psd(cov_x)
    cross = torch.linalg.eigvalsh(root_x @ cov_y @ root_x).clamp_min(0).sqrt().sum()
    return (mu @ mu + cov_x.trace() + cov_y.trace() - 2 * cross).item()


def feature_distances(
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    classes: Sequence[int] | None = None,
) -> dict:
    """KID and Frechet distance between ``images`` and ``real`` in ``teacher``'s penultimate features,
    overall and (KID only: Frechet distances of a few dozen images are mostly bias) per class."""
    fa, fb = penultimate_features(teacher, images), penultimate_features(teacher, real)
    classes = sorted(labels.unique().tolist()) if classes is None else [int(c) for c in classes]
    per_class = []
    for c in classes:
        a, b = fa[labels == c], fb[real_labels == c]
        per_class.append(kid(a, b) if min(len(a), len(b)) >= 2 else float("nan"))
    return {
        "kid": kid(fa, fb),
        "frechet": frechet_distance(fa, fb),
        "kid_per_class": per_class,
        "classes": classes,
        "feature_dim": fa.shape[1],
    }


def set_diagnostics(
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    bn_batch: int = 100,
) -> dict:
    """Every per-set measure of ``images`` (prompted ``labels``) against ``real``: fine detail, class
    fidelity, BN distance (when the teacher has BatchNorm) and the feature distances."""
    record = {"n": len(images), **detail_summary(images)}
    record.update(class_fidelity(teacher, images, labels))
    if batchnorm_layers(teacher) and len(images) >= bn_batch:
        record["bn_distance"] = set_bn_distance(teacher, images, batch_size=bn_batch)
    record.update(feature_distances(teacher, images, labels, real, real_labels, record["classes"]))
    return record


def generator_diagnostics(
    vae: nn.Module,
    teacher: nn.Module,
    generated: tuple[torch.Tensor, torch.Tensor],
    real: tuple[torch.Tensor, torch.Tensor],
    held_back: tuple[torch.Tensor, torch.Tensor],
) -> dict:
    """The generator's diagnostics, each set given as (images, labels).

    ``vae``: its round trip of the ``held_back`` public images (PSNR, SSIM, fine detail). ``real`` (the
    teachers' kind of data) is measured against ``held_back`` (other real images): the noise floor of the
    feature distances. ``generated`` (prompted labels) is measured against ``real``. ``ratios_to_real``:
    the ratios the model card's targets are stated in (a round trip against the images it reproduces,
    generated against ``real``)."""
    record = {"vae": vae_fidelity(vae, held_back[0]), "held_back": detail_summary(held_back[0])}
    record["real"] = set_diagnostics(teacher, real[0], real[1], *held_back)
    record["generated"] = set_diagnostics(teacher, generated[0], generated[1], *real)
    real_hf, real_tv = record["real"]["hf_share"], record["real"]["total_variation"]
    record["ratios_to_real"] = {
        "round_trip_hf_share": record["vae"]["round_trip_hf_share"] / record["held_back"]["hf_share"],
        "generated_hf_share": record["generated"]["hf_share"] / real_hf,
        "generated_total_variation": record["generated"]["total_variation"] / real_tv,
    }
    return record
