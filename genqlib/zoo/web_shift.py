"""The "web" view of Fashion-MNIST that the mini generator is trained on.

Stable Diffusion learned from web photos, not from ImageNet, so its images differ from a classifier's
training data; GenQ's filters and style token exist to close that gap. The mini world recreates the gap:
the generator only sees public-pool images through this deliberately wider distribution, while the
teachers were trained on clean private-set images. Every parameter of the shift is a field of
``WebShift`` and is quoted in the generator's model card.

Like web alt-text, captions partly describe what happened to a picture: ``describing_words`` names the
perturbations of each drawn image with CLIP template adjectives ("dark", "close-up", "clean", ...), and the
trainer puts one of them in the caption with probability ``p_described``. That gives the text encoder
directions that steer the shift, which is what a learned style token (GenQ's data-scarce case) can find.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class WebShift:
    """Probabilities and ranges of each perturbation (drawn independently, per image)."""

    pad: int = 2  # 28x28 -> 32x32 with black borders, the generator's pixel size
    p_affine: float = 0.7
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.1)
    max_translate_px: float = 3.0
    p_zoom: float = 0.1  # odd framing: a close crop that cuts the object at the borders
    zoom_range: tuple[float, float] = (1.3, 1.6)
    p_flip: float = 0.5
    p_tone: float = 0.5  # exposure: gain and gamma, so black stays black
    gain_range: tuple[float, float] = (0.6, 1.3)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    p_background: float = 0.15  # a grey backdrop instead of pure black
    background_range: tuple[float, float] = (0.05, 0.2)
    p_described: float = 0.5  # how often a caption's adjective names the image's perturbation

    def describe(self) -> dict:
        """The shift's settings as plain JSON-able values."""
        return asdict(self)


# Adjectives (all CLIP template words) that describe a drawn perturbation; a caption can hold one of them.
SHIFT_WORDS: tuple[str, ...] = ("clean", "good", "close-up", "cropped", "small", "large")
SHIFT_WORDS += ("dark", "bright", "dirty")


@dataclass(frozen=True)
class ShiftDraw:
    """The perturbations drawn for a batch of ``n`` images (one row each)."""

    affine: torch.Tensor  # bool: rotation, scale and translation applied
    angle: torch.Tensor  # radians
    scale: torch.Tensor  # > 1 enlarges the object
    zoom: torch.Tensor  # 1 or a close-crop factor
    move: torch.Tensor  # (n, 2) translation in pixels
    flip: torch.Tensor  # bool: mirrored left-right
    tone: torch.Tensor  # bool: exposure changed
    gain: torch.Tensor
    gamma: torch.Tensor
    backdrop: torch.Tensor  # bool: grey backdrop
    level: torch.Tensor  # backdrop grey level


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _coin(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def draw_shift(n: int, gen: torch.Generator, shift: WebShift | None = None) -> ShiftDraw:
    """Draw every perturbation for ``n`` images from ``gen`` (undrawn ones are set to the identity)."""
    s = shift or WebShift()
    affine = _coin(n, s.p_affine, gen)
    angle = torch.where(affine, _uniform(n, -1, 1, gen) * math.radians(s.max_rotation_deg), 0.0)
    scale = torch.where(affine, _uniform(n, *s.scale_range, gen), 1.0)
    zoom = torch.where(_coin(n, s.p_zoom, gen), _uniform(n, *s.zoom_range, gen), torch.ones(n))
    move = _uniform(2 * n, -1, 1, gen).view(n, 2) * s.max_translate_px
    flip = _coin(n, s.p_flip, gen)
    tone = _coin(n, s.p_tone, gen)
    gain = torch.where(tone, _uniform(n, *s.gain_range, gen), 1.0)
    gamma = torch.where(tone, _uniform(n, *s.gamma_range, gen), 1.0)
    backdrop = _coin(n, s.p_background, gen)
    level = torch.where(backdrop, _uniform(n, *s.background_range, gen), 0.0)
    move = move * affine[:, None]
    return ShiftDraw(affine, angle, scale, zoom, move, flip, tone, gain, gamma, backdrop, level)


def _affine_matrices(d: ShiftDraw, size: int) -> torch.Tensor:
    """Per-image 2x3 matrices for ``affine_grid`` on ``size``-pixel images (identity where nothing was drawn)."""
    sign = torch.where(d.flip, -1.0, 1.0)
    cos, sin = torch.cos(d.angle) / (d.scale * d.zoom), torch.sin(d.angle) / (d.scale * d.zoom)
    move = d.move * 2 / size  # pixels -> affine_grid's [-1, 1] coordinates
    return torch.stack(
        [torch.stack([cos * sign, -sin, move[:, 0]], 1), torch.stack([sin * sign, cos, move[:, 1]], 1)], 1
    )


def apply_draw(images: torch.Tensor, draw: ShiftDraw, shift: WebShift | None = None) -> torch.Tensor:
    """The drawn perturbations applied to 28x28 images in [0, 1]: padded to 32x32, geometry, exposure,
    backdrop."""
    x = F.pad(images, ((shift or WebShift()).pad,) * 4)
    grid = F.affine_grid(_affine_matrices(draw, x.shape[-1]), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    view = (-1, 1, 1, 1)
    x = (x.clamp(0, 1) ** draw.gamma.view(view) * draw.gain.view(view)).clamp(0, 1)
    level = draw.level.view(view)
    return level + (1 - level) * x


def apply_web_shift(
    images: torch.Tensor, gen: torch.Generator, shift: WebShift | None = None
) -> torch.Tensor:
    """Shifted copies of 28x28 images in [0, 1], padded to 32x32 (draw, then apply)."""
    return apply_draw(images, draw_shift(len(images), gen, shift), shift)


def describing_words(draw: ShiftDraw) -> torch.Tensor:
    """Which ``SHIFT_WORDS`` describe each drawn image: a (n, len(SHIFT_WORDS)) bool matrix.

    "clean"/"good": no geometry, exposure or backdrop change (a mirror image counts as clean);
    "close-up"/"cropped": the close crop; "small"/"large": scale below 0.9 / above 1.05;
    "dark"/"bright": gain below 0.85 / above 1.1; "dirty": the grey backdrop."""
    clean = ~(draw.affine | (draw.zoom > 1) | draw.tone | draw.backdrop)
    zoomed = draw.zoom > 1
    columns = [clean, clean, zoomed, zoomed, draw.scale < 0.9, (draw.scale > 1.05) & ~zoomed]
    columns += [draw.gain < 0.85, draw.gain > 1.1, draw.backdrop]
    return torch.stack(columns, 1)


def pad_clean(images: torch.Tensor, shift: WebShift | None = None) -> torch.Tensor:
    """Unshifted 28x28 images padded to the generator's 32x32 (for reconstructions and real grids)."""
    pad = (shift or WebShift()).pad
    return F.pad(images, (pad,) * 4)
