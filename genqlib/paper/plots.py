"""The plots the paper items and notebooks share: image grids, saving a figure, zooming an axis on its points,
and ``Curves``: the mean ± std over seeds of each plotted point, which notebook 06's items draw on.

Everything here works headless (papermill, no front end); the notebooks' widgets live in ``genqlib.ui``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from genqlib.paper.common import mean
from genqlib.paper.verdict import spread_of


def image_grid(
    rows: Sequence[torch.Tensor], row_labels: Sequence[str], title: str = "", cell: float = 0.7
) -> Figure:
    """A grid with one row per tensor of images (N, C, H, W) in [0, 1], labelled on the left."""
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(cell * n_cols + 1.2, cell * len(rows) + 0.4), squeeze=False
    )
    for r, (images, label) in enumerate(zip(rows, row_labels, strict=True)):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if c < len(images):
                img = images[c].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 0.96 if title else 1))
    return fig


PRINT_DPI = 150  # a PNG that prints sharp in a two-column paper; the SVG beside it scales to any size


def save(fig: Figure, folder: Path, name: str) -> Path:
    """Save ``fig`` as ``folder/name.png`` at ``PRINT_DPI`` and as ``folder/name.svg`` beside it (folder
    created); return the PNG's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=PRINT_DPI, bbox_inches="tight")
    # no date, and element ids hashed from a fixed salt (not a random one): the same figure, the same bytes
    with plt.rc_context({"svg.hashsalt": "genqlib"}):
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", metadata={"Date": None})
    return path


def zoom(ax, points: Sequence[tuple[float, str, float]], top: float, margin: float = 2.0) -> float:
    """Zoom ``ax``'s y axis on the points that calibrate at all (above half of ``top``, the full-precision
    accuracy) up to ``top``; a point below the new bottom is written at the bottom edge as "label value", so
    nothing leaves the plot unsaid. ``points``: (x, label, y). Returns the bottom."""
    ys = [y for _, _, y in points]
    bottom = max(0.0, min([y for y in ys if y > top / 2] or ys or [0.0]) - margin)
    ax.set_ylim(bottom, top + margin / 2)
    for x, label, y in points:
        if y < bottom:
            ax.annotate(f"{label} {y:.0f}", (x, bottom), fontsize=6, rotation=90, va="bottom", ha="center")
    return bottom


def width_label(w: int, a: int) -> str:
    """A bit width as plots label it: ``W4A2``."""
    return f"W{w}A{a}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """One point's top-1 over its seeds as (mean, std); the std is 0 when it ran with one seed."""
    spread = spread_of(values)
    return (spread.mean, spread.std) if spread else (mean(list(values)), 0.0)


def log_ticks(ax, xs: Sequence[float]) -> None:
    """Label a log x axis at the measured values only."""
    xs = sorted(set(xs))
    ax.set_xticks(xs, [f"{x:,g}" for x in xs])
    ax.minorticks_off()


class Curves:
    """Series of points on one axis, each point the mean ± std of its seeds' top-1; keeps what it drew
    (``curve``: per series, the (x, mean, std) points; ``marks``: (x, label, mean) for ``zoom``)."""

    def __init__(self, ax) -> None:
        self.ax = ax
        self.curve: dict[str, list[tuple]] = {}
        self.marks: list[tuple[float, str, float]] = []

    def series(
        self, name: str, points: Sequence[tuple[float, Sequence[float]]], label: str, fmt: str = "o-", **style
    ) -> None:
        """Plot ``points`` ((x, seed values) pairs) as error bars named ``name``; nothing when empty."""
        drawn = [(x, *mean_std(values)) for x, values in points]
        if not drawn:
            return
        self.curve[name] = drawn
        xs, ys, errors = zip(*drawn, strict=True)
        self.ax.errorbar(xs, ys, yerr=errors, fmt=fmt, capsize=3, label=label, **style)
        self.marks.extend((x, name, y) for x, y, _ in drawn)

    def xs(self) -> list[float]:
        return [x for x, _, _ in self.marks]
