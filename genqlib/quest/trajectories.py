"""QuEST's data-free calibration set: the UNet inputs along the FP pipeline's own sampling trajectories.

Label prompts per class are sampled by the FP pipeline with the profile's scheduler, steps and guidance, from
seeds disjoint from the evaluated images'; every UNet call is recorded, the classifier-free-guidance batch
included (unconditional and conditional rows), and a random subset of the rows is kept.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from genqlib.quest.timeaware import unet_timestep

SEED_OFFSET = 1_000_003  # trajectory seeds never meet the seeds of a generated set


def record_unet_inputs(
    pipe, run: Callable, *args, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``run(*args, **kwargs)`` (anything that samples with ``pipe``) and return every UNet call's inputs as
    batch-first (latents, timesteps, text embeddings), the guidance batch included, on the CPU."""
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def hook(module, a, kw):
        sample, t = a[0], unet_timestep(a, kw)
        emb = a[2] if len(a) > 2 else kw["encoder_hidden_states"]
        t = torch.as_tensor(t).flatten().expand(len(sample)) if torch.as_tensor(t).numel() == 1 else t
        rows.append((sample.detach().float().cpu(), t.detach().long().cpu(), emb.detach().float().cpu()))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run(*args, **kwargs)
    finally:
        handle.remove()
    return tuple(torch.cat([r[i] for r in rows]) for i in range(3))


def trajectory_inputs(
    pipe,
    classes: Sequence[int],
    per_class: int,
    *,
    steps: int,
    guidance_scale: float = 3.5,
    seed: int = 0,
    rows: int | None = None,
    class_names: Sequence[str],
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """UNet inputs (latents, timesteps, text embeddings) along the FP pipeline's trajectories for ``per_class``
    label prompts per class (seed ``seed`` offset so they never share a trajectory with a generated set of
    seed ``seed``), ``rows`` of them kept at random (all when None)."""
    from genqlib.generate import generate

    with tempfile.TemporaryDirectory(prefix="genq_traj_") as tmp:
        data = record_unet_inputs(
            pipe,
            generate,
            pipe,
            list(classes),
            per_class,
            out=Path(tmp) / "set",
            guidance_scale=guidance_scale,
            steps=steps,
            seed=seed + SEED_OFFSET,
            batch_size=batch_size,
            progress=False,
            class_names=class_names,
        )
    if rows is not None and rows < len(data[0]):
        pick = torch.randperm(len(data[0]), generator=torch.Generator().manual_seed(seed))[:rows]
        data = tuple(a[pick] for a in data)
    return data
