"""Notebook 02's panel: the energy and BN-sensitivity thresholds of the filter over one synthetic set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure  # figures are built without pyplot: nothing is shown twice or kept

from genqlib.prompts import prompt_name
from genqlib.ui.panel import Panel, show_images, slider

# ---------------------------------------------------------------- 02: filter thresholds


def filter_explorer(
    models: Mapping[str, torch.nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    energy_drop: float = 0.3,
    second_drop: float = 0.3,
    T: float = 1.0,
    seed: int = 0,
    n_show: int = 24,
    *,
    class_names: Sequence[str],
) -> Panel:
    """Energy and second-stage drop sliders and a teacher picker over GenQ's two-stage filter.

    Shows the score histograms with the thresholds, the kept count per class, kept and rejected images, and
    the BN distance and class fidelity of the kept set (summary line). Scores are computed once per setting.
    """
    from genqlib.filters import batchnorm_layers, filter_pipeline
    from genqlib.metrics import class_fidelity, set_bn_distance

    cache: dict[tuple, object] = {}
    present = (
        labels.unique().tolist()
    )  # class indices into ``class_names`` (ImageNet runs use a few of 1,000)

    def draw(teacher: str, energy_drop: float, second_drop: float) -> tuple[Figure, dict]:
        model = models[teacher]
        key = (teacher, round(energy_drop, 4), round(second_drop, 4))
        if key not in cache:
            cache[key] = filter_pipeline(
                model, images, labels, energy_drop=energy_drop, second_drop=second_drop, T=T, seed=seed
            )
        result = cache[key]
        kept = result.kept
        mask = torch.zeros(len(images), dtype=torch.bool)
        mask[kept] = True
        rejected = (~mask).nonzero().flatten()
        energies = result.scores["energy"]
        second_name = next(k for k in result.scores if k != "energy")
        second = result.scores[second_name]
        survivors = ~second.isnan()
        per_class = torch.stack([(labels[kept] == c).sum() for c in present])
        state = {
            "teacher": teacher,
            "kept": len(kept),
            "of": len(images),
            "after_energy": int(survivors.sum()),
            "kept_per_class": per_class.tolist(),
            "kept_indices": kept.tolist(),
        }
        if len(kept):
            state["class_fidelity"] = class_fidelity(model, images[kept], labels[kept])["class_fidelity"]
            if batchnorm_layers(model):
                state["bn_distance"] = set_bn_distance(model, images[kept], min(100, len(kept)))["mean"]

        fig = Figure(figsize=(11, 5.6))
        grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.25])
        ax = fig.add_subplot(grid[0, 0])
        edges = torch.linspace(float(energies.min()), float(energies.max()) + 1e-6, 31).numpy()
        ax.hist(
            [energies[survivors].numpy(), energies[~survivors].numpy()],
            bins=edges,
            stacked=True,
            color=["C0", "C3"],
            label=["passed", f"dropped ({energy_drop:.0%} per class)"],
        )
        ax.set_xlabel(f"energy (T={T:g}); lower = more in-distribution", fontsize=8)
        ax.set_ylabel("images", fontsize=8)
        ax.set_title("energy stage: every image (thresholds per class)", fontsize=9)
        ax.legend(fontsize=7)
        ax = fig.add_subplot(grid[0, 1])
        scored = second[survivors]
        if len(scored):
            edges = torch.linspace(float(scored.min()), float(scored.max()) + 1e-6, 31).numpy()
            ax.hist(
                [second[mask].numpy(), second[survivors & ~mask].numpy()],
                bins=edges,
                stacked=True,
                color=["C2", "C3"],
                label=["kept", f"dropped ({second_drop:.0%} per class)"],
            )
            ax.legend(fontsize=7)
        better = "lower" if second_name == "bn_sensitivity" else "higher"
        ax.set_xlabel(f"{second_name.replace('_', ' ')}; {better} is kept", fontsize=8)
        ax.set_ylabel("images", fontsize=8)
        ax.set_title("second stage: the energy survivors", fontsize=9)
        ax = fig.add_subplot(grid[0, 2])
        ax.bar(range(len(present)), per_class.numpy(), color="C2")
        ax.set_xticks(
            range(len(present)), [prompt_name(class_names[c]) for c in present], rotation=60, fontsize=7
        )
        ax.set_ylabel("images kept", fontsize=8)
        ax.set_title(f"kept per class ({len(kept)} of {len(images)})", fontsize=9)
        cols = max(4, n_show // 3)
        show_images(fig.add_subplot(grid[1, :2]), images[kept[:n_show]], cols, "kept (first)")
        show_images(fig.add_subplot(grid[1, 2]), images[rejected[:n_show]], cols // 2, "rejected (first)")
        fig.suptitle(
            f"{teacher}: drop the highest-energy {energy_drop:.0%} of each class, then "
            f"{second_drop:.0%} of each class's survivors by {second_name.replace('_', ' ')}"
        )
        fig.tight_layout()
        parts = [f"{teacher}: kept {len(kept)} of {len(images)} ({state['after_energy']} after energy)"]
        if "bn_distance" in state:
            parts.append(f"BN distance {state['bn_distance']:.2f}")
        if "class_fidelity" in state:
            parts.append(f"class fidelity {state['class_fidelity']:.3f}")
        state["summary"] = "; ".join(parts)
        return fig, state

    controls = {
        "teacher": widgets.Dropdown(options=list(models), description="teacher"),
        "energy_drop": slider(
            energy_drop, 0.0, 0.9, 0.05, "energy stage: drop the highest-energy share of each class", True
        ),
        "second_drop": slider(
            second_drop, 0.0, 0.9, 0.05, "second stage: drop this share of each class's survivors", True
        ),
    }
    hint = (
        "drag the energy drop from 30% to 70% and watch the rejected images and the BN distance; each class "
        "has its own threshold, so red bars reach across the whole energy range."
    )
    return Panel(controls, draw, name="filter", hint=hint)
