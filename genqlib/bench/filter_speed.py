"""Throughput of the selection scores in images/s, and closed-form against naive BN sensitivity."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from genqlib.filters import bn_sensitivity, bn_sensitivity_naive, energy, patch_entropy
from genqlib.infra.machine import machine_record
from genqlib.paper.profiles import REPO_ROOT
from genqlib.zoo import TEACHER_DIR, build_teacher, load_teacher

DEFAULT_OUT = REPO_ROOT / "figures" / "bench" / "filters.json"


def _teacher(name: str) -> tuple[nn.Module, str]:
    """The trained teacher when its weights exist, else a random-weight one; and which of the two it is."""
    if (TEACHER_DIR / f"{name}.safetensors").exists():
        return load_teacher(name), "trained"
    return build_teacher(name).eval(), "random"


def _images_per_second(score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> float:
    start = time.perf_counter()
    score(images)
    return len(images) / (time.perf_counter() - start)


def bench_filters(
    out_path: str | Path = DEFAULT_OUT, batch_size: int = 64, n_batches: int = 4, device: str = "cpu"
) -> dict:
    """Images/s of energy, BN sensitivity (closed form and naive) and patch entropy on the mini-world teachers
    at batch size `batch_size`; writes the record as JSON to `out_path`, prints it and returns it.

    The naive BN sensitivity (B + 1 forward passes a batch) is timed on one batch, the others on `n_batches`.
    Inputs are uniform noise: the speed of these scores does not depend on image content.
    """
    images = torch.rand(batch_size * n_batches, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rates: dict[str, dict[str, float]] = {k: {} for k in ("energy", "bn_sensitivity", "bn_sensitivity_naive")}
    rates["patch_entropy"] = {}
    weights = {}
    for name in ("resnet", "mobilenet", "vit"):
        model, weights[name] = _teacher(name)
        model.to(device)
        energy(model, images[:batch_size])  # warm-up
        rates["energy"][name] = _images_per_second(partial(energy, model, batch_size=batch_size), images)
        if name == "vit":
            score = partial(patch_entropy, model, batch_size=batch_size)
            rates["patch_entropy"][name] = _images_per_second(score, images)
        else:
            score = partial(bn_sensitivity, model, batch_size=batch_size)
            rates["bn_sensitivity"][name] = _images_per_second(score, images)
            naive = partial(bn_sensitivity_naive, model, batch_size=batch_size)
            rates["bn_sensitivity_naive"][name] = _images_per_second(naive, images[:batch_size])
    record = {
        "batch_size": batch_size,
        "images": len(images),
        "images_naive": batch_size,
        "device": device,
        "machine": machine_record(),
        "teachers": weights,
        "images_per_s": {k: {m: round(v, 2) for m, v in d.items()} for k, d in rates.items()},
        "bn_sensitivity_speedup": {
            m: round(rates["bn_sensitivity"][m] / rates["bn_sensitivity_naive"][m], 1)
            for m in rates["bn_sensitivity"]
        },
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record
