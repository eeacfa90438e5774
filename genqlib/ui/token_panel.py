"""Notebook 03's panel: images made with and without the learned style token, side by side."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.prompts import prompt_name
from genqlib.ui.panel import Panel, show_images

# ---------------------------------------------------------------- 03: prompts with and without the token


def token_compare(
    sample: Callable[[str, int, int], torch.Tensor],
    shots: torch.Tensor,
    shot_labels: torch.Tensor,
    plain: str = "A photo of a {C}",
    styled: str = "A photo of a {C} in the style of {S}",
    token: str = "<S>",
    seed: int = 0,
    n: int = 6,
    *,
    class_names: Sequence[str],
) -> Panel:
    """Prompt text with and without the learned token, a class and a seed: generated images of both prompts
    beside the real shots of that class. ``sample(prompt, seed, n)`` returns (n, C, H, W) images in [0, 1];
    ``{C}`` in a prompt stands for the class name, ``{S}`` for the token."""
    cache: dict[tuple, torch.Tensor] = {}

    def images(prompt: str, seed: int) -> torch.Tensor:
        if (prompt, seed) not in cache:
            cache[prompt, seed] = sample(prompt, seed, n)
        return cache[prompt, seed]

    def draw(class_index: int, plain: str, styled: str, seed: int) -> tuple[Figure, dict]:
        c, class_name = class_index, class_names[class_index]
        fill = {"C": prompt_name(class_name), "S": token}
        prompts = {"without token": plain.format(**fill), "with token": styled.format(**fill)}
        real = shots[shot_labels == c]
        generated = {k: images(p, seed) for k, p in prompts.items()}
        rows = 2 if n > 3 else 1
        cols = math.ceil(n / rows)
        real_cols = max(1, math.ceil(len(real) / rows))
        fig = Figure(figsize=(1.2 + 0.75 * (real_cols + 2 * cols), 0.9 + 0.8 * rows))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [real_cols, cols, cols]})
        show_images(axes[0], real, real_cols, f"real shots ({len(real)})")
        for ax, (k, p) in zip(axes[1:], prompts.items(), strict=True):
            show_images(ax, generated[k], cols, k)
            ax.set_xlabel(textwrap.fill(p, 34), fontsize=7)
        fig.suptitle(f"{class_name}, seed {seed}", fontsize=9)
        fig.tight_layout()
        state = {
            "prompts": prompts,
            "seed": seed,
            "class": class_name,
            "mean_abs_difference": float((generated["with token"] - generated["without token"]).abs().mean()),
            "summary": f"{class_name}, seed {seed}: {prompts['without token']!r} vs {prompts['with token']!r}",
        }
        return fig, state

    controls = {
        "class_index": widgets.Dropdown(
            options=[(class_names[c], c) for c in shot_labels.unique().tolist()], description="class"
        ),
        "plain": widgets.Text(value=plain, description="without", continuous_update=False),
        "styled": widgets.Text(value=styled, description="with token", continuous_update=False),
        "seed": widgets.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed"),
    }
    hint = "change the seed, or put another word before the token, and see what the token changes."
    return Panel(controls, draw, name="token", hint=hint)
