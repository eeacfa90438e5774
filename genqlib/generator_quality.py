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

import torch
from torch import nn
from torch.nn import functional as F

from genqlib.metrics import eval_mode

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


def vae_fidelity(vae: nn.Module, images: torch.Tensor) -> dict:
    """PSNR and SSIM of ``vae``'s round trip of ``images`` (mean over images) and the fine detail it keeps."""
    recon = vae_round_trip(vae, images)
    return {
        "psnr_db": psnr(recon, images).mean().item(),
        "ssim": ssim(recon, images).mean().item(),
        "n": len(images),
        **{f"round_trip_{k}": v for k, v in detail_summary(recon).items()},
    }
