"""The generator's diagnostics as a figure and a table, from the mini world's fixed splits.

``genqlib.generator_quality`` measures tensors; this module picks them (real images from the private split,
held-back images from the public pool's tail, the generated set given by the caller), draws the side-by-side
figure and lays out the table that notebook 01 and ``python -m genqlib.bench generator`` show.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from genqlib.fashion_mnist import load_fashion_mnist
from genqlib.generator_quality import generator_diagnostics, vae_round_trip
from genqlib.infra.text_table import format_table

HELD_BACK = 500  # the public pool's last 500 images: held back from a generator trained with ``holdout=500``


def held_back_public(n: int = HELD_BACK):
    """The public pool's last ``n`` images and labels (a generator trained with ``holdout >= n`` never saw
    them; the first generator saw every public image)."""
    pool = load_fashion_mnist("public")
    return pool.images[-n:], pool.labels[-n:]


def real_private(n: int, seed: int = 0):
    """A class-balanced random ``n`` of the private split (the teachers' data; the "Real Data" source)."""
    split = load_fashion_mnist("private").subset(n, seed=seed)
    return split.images, split.labels


def side_by_side(
    real: torch.Tensor,
    round_trip: torch.Tensor,
    generated: torch.Tensor,
    real_labels: torch.Tensor,
    generated_labels: torch.Tensor,
    class_names: Sequence[str],
    per_class: int = 3,
    cell: float = 1.0,
) -> Figure:
    """One row per class: ``per_class`` real images, their VAE round trips, then ``per_class`` generated
    images of that class, each drawn pixel for pixel (nearest neighbour, no smoothing) at ``cell`` inches."""
    classes = sorted(set(real_labels.tolist()) & set(generated_labels.tolist()))
    n_cols = 3 * per_class
    fig, axes = plt.subplots(
        len(classes), n_cols, figsize=(cell * n_cols + 1.4, cell * len(classes) + 0.5), squeeze=False
    )
    for r, c in enumerate(classes):
        real_idx = (real_labels == c).nonzero().flatten()[:per_class]
        gen_idx = (generated_labels == c).nonzero().flatten()[:per_class]
        cells = (
            [real[i] for i in real_idx] + [round_trip[i] for i in real_idx] + [generated[i] for i in gen_idx]
        )
        for col, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(cells):
                ax.imshow(
                    cells[col][0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
                )
        axes[r][0].set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=8)
    for col, title in enumerate(("real", "VAE round trip", "generated")):
        axes[0][col * per_class + per_class // 2].set_title(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    return fig


def diagnostics_rows(record: dict) -> list[dict]:
    """The record of ``generator_diagnostics`` as table rows: one per image set."""
    vae, gen, real, held = record["vae"], record["generated"], record["real"], record["held_back"]
    return [
        {"set": "real (private)", "hf_share": real["hf_share"], "total_variation": real["total_variation"]}
        | {
            "class_fidelity": 100 * real["class_fidelity"],
            "bn_distance": real.get("bn_distance", {}).get("mean"),
        }
        | {"kid": real["kid"], "frechet": real["frechet"]},  # against the held-back public images
        {
            "set": "real (held-back public)",
            "hf_share": held["hf_share"],
            "total_variation": held["total_variation"],
        },
        {
            "set": "VAE round trip",
            "psnr_db": vae["psnr_db"],
            "ssim": vae["ssim"],
            "hf_share": vae["round_trip_hf_share"],
            "total_variation": vae["round_trip_total_variation"],
        },
        {"set": "generated", "hf_share": gen["hf_share"], "total_variation": gen["total_variation"]}
        | {
            "class_fidelity": 100 * gen["class_fidelity"],
            "bn_distance": gen.get("bn_distance", {}).get("mean"),
        }
        | {"kid": gen["kid"], "frechet": gen["frechet"]},
    ]


TABLE_COLUMNS = ("set", "psnr_db", "ssim", "hf_share", "total_variation", "class_fidelity", "bn_distance")
TABLE_COLUMNS += ("kid", "frechet")


def generator_section(
    pipe,
    teacher: nn.Module,
    generated: torch.Tensor,
    generated_labels: torch.Tensor,
    class_names: Sequence[str],
    n_real: int = 1000,
    seed: int = 0,
) -> tuple[Figure, str, dict]:
    """Notebook 01's generator-quality section: the side-by-side figure, the table (as text) and the full
    record, for ``pipe``'s VAE and a ``generated`` set (images (N, 1, 28, 28), prompted labels)."""
    held, held_labels = held_back_public()
    real, real_labels = real_private(n_real, seed)
    record = generator_diagnostics(
        pipe.vae, teacher, (generated, generated_labels), (real, real_labels), (held, held_labels)
    )
    fig = side_by_side(
        held, vae_round_trip(pipe.vae, held), generated, held_labels, generated_labels, class_names
    )
    rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in diagnostics_rows(record)]
    return fig, format_table(rows, TABLE_COLUMNS, floats="{:.3f}"), record
