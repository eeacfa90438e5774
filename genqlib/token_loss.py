"""Did the style token learn? Eq. 11's loss of the initial and the learned embedding on the same draws.

The per-step training loss of a style token (``genqlib.inversion``) is dominated by which timestep and noise
each step draws: at the mini generator it stays around 0.19 from the first step to the last, so the curve
cannot show what the row learned. Evaluated on the *same* fixed draws (shots, posterior samples, noise,
timesteps) for two embeddings, that variance is shared and cancels in the difference: the paired comparison
says whether the learned row predicts the noise of the shots better than the word it started from.

The draws come from the training's own sampler (``inversion._draw``) with a seed the training never used
(``seed + 1``'s generators), so they are fresh noise and timesteps on the same shots: the loss measures the
fit to the shots (what textual inversion optimises), not generalisation to other images.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import torch

from genqlib.inversion import (
    _as_shots,
    _draw,
    _encode_posterior,
    _Objective,
    _prompt_ids,
    _TrainableRow,
    to_vae_input,
)

HELD_OUT_SEED_OFFSET = 1  # draws from seed + 1: the training (seed) never drew them


@torch.no_grad()
def paired_token_loss(
    pipe,
    shots,
    placeholder: str,
    embeddings: Mapping[str, torch.Tensor],
    n_draws: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Eq. 11's loss of each embedding in ``embeddings`` (name -> vector for ``placeholder``) on the same
    ``n_draws`` batches; ``pipe`` must hold ``placeholder`` (``inversion.add_placeholder``).

    Returns ``{"losses": {name: [per-draw loss]}, "n_draws", "batch_size", "seed"}`` and, for exactly two
    embeddings (before, after): ``"difference"`` (after - before per draw: mean, std, and the fraction of
    draws where ``after`` is lower)."""
    if n_draws < 2:
        raise ValueError(f"n_draws must be >= 2 to give a spread, got {n_draws}")
    images, names = _as_shots(shots, class_names)
    token_id = pipe.tokenizer.convert_tokens_to_ids(placeholder)
    if token_id == pipe.tokenizer.unk_token_id:
        raise ValueError(f"{placeholder!r} is not in the pipeline's tokenizer; add it first")
    ids, classes = _prompt_ids(pipe, names, placeholder, token_id)
    objective = _Objective(pipe, ids, torch.tensor([classes.index(n) for n in names]))
    mean, std = _encode_posterior(pipe, to_vae_input(images, pipe))
    n_t = objective.ddpm.config.num_train_timesteps
    draws = [_draw(i, seed + HELD_OUT_SEED_OFFSET, mean, std, batch_size, n_t) for i in range(n_draws)]
    losses = {}
    for name, vector in embeddings.items():
        with _TrainableRow(pipe, token_id, vector):
            losses[name] = [float(objective(batch)) for batch in draws]
    out = {"losses": losses, "n_draws": n_draws, "batch_size": batch_size, "seed": seed}
    if len(losses) == 2:
        before, after = losses.values()
        diff = [a - b for a, b in zip(after, before, strict=True)]
        out["difference"] = {
            "mean": statistics.mean(diff),
            "std": statistics.stdev(diff),
            "after_lower": sum(d < 0 for d in diff) / len(diff),
        }
    return out
