"""The paper's section-5 analyses in the mini world (notebook 06): number of synthetic images, filter
strength, cross-model transfer, the data-scarce curve and generation cost, plus the seed spread of one PTQ
point that says which of their gaps are larger than noise.

Every PTQ point goes through ``experiments.ptq_run`` (cached JSON keyed by settings and data digests) and
every filtered set is saved as a named view of the shared label-prompt pool, so a re-run reuses them.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from genqlib.baselines import bn_inversion
from genqlib.data import Split
from genqlib.datasets import class_names, real_images, run_classes
from genqlib.experiments import (
    BN_INVERSION_ITERS,
    BN_INVERSION_LR,
    cached_json,
    calibration_images,
    filtered_view,
    first_per_class,
    profile_run,
    ptq_run,
)
from genqlib.filters import filter_set, keep_count
from genqlib.generate import generate, pipeline_id, profile_set
from genqlib.metrics import set_bn_distance
from genqlib.profiles import Profile
from genqlib.store import SyntheticSet
from genqlib.zoo import teacher_tag

# Per-profile defaults of notebook 06. ``iters``: reconstruction iterations per block for every PTQ point here
# (None: the profile's ``recon_iters``); the mini profile halves notebook 04's 1,000 to keep the ~55 PTQ
# points of this notebook affordable on 2 CPU cores (1-2 minutes each): the analyses compare points with each other.
ABLATION_DEFAULTS: dict[str, dict] = {
    "ci": {
        "sizes": [16, 32, 64],
        "strengths": [0.1, 0.5, 0.9],
        "strength_n": 16,
        "shots": [1, 2],
        "seeds": [0, 1],
        "iters": None,
        "cost_images": 10,
    },
    "mini": {
        "sizes": [256, 512, 1024, 2048, 4096],
        "strengths": [0.1, 0.3, 0.5, 0.7, 0.9],
        "strength_n": 512,
        "shots": [1, 5, 10, 50, 100],
        "seeds": [0, 1, 2],
        "iters": 500,
        "cost_images": 100,
    },
    "paper-smoke": {
        "sizes": [8, 16],
        "strengths": [0.1, 0.5],
        "strength_n": 8,
        "shots": [1],
        "seeds": [0, 1],
        "iters": None,
        "cost_images": 4,
    },
    "paper": {
        "sizes": [256, 512, 1024, 2048, 4096],
        "strengths": [0.1, 0.3, 0.5, 0.7, 0.9],
        "strength_n": 1024,
        "shots": [1, 2, 5, 10, 50],
        "seeds": [0, 1, 2],
        "iters": None,
        "cost_images": 100,
    },
}
DEFAULT_DROPS = (0.3, 0.3)  # GenQ's energy and BN-sensitivity / patch-entropy drop ratios


def ablation_settings(profile: Profile) -> dict:
    """A copy of ABLATION_DEFAULTS for ``profile`` with ``iters`` resolved to a number."""
    settings = dict(ABLATION_DEFAULTS[profile.name])
    settings["iters"] = settings["iters"] or profile.recon_iters
    return settings


# ---------------------------------------------------------------- calibration sets


def pool_per_class(n: int, drops: tuple[float, float], n_classes: int) -> int:
    """The fewest images per class from which filtering with ``drops`` (per class) still leaves ``n`` balanced
    images: about the paper's N / (1 - r) for one stage, N / ((1 - r1)(1 - r2)) for two."""
    need = math.ceil(n / n_classes)
    per_class = need
    while keep_count(keep_count(per_class, drops[0]), drops[1]) < need:
        per_class += 1
    return per_class


def label_pool(profile: Profile, per_class: int, work_dir: Path) -> SyntheticSet:
    """The first ``per_class`` images of each class of the profile's shared label-prompt set (grown if needed)."""
    pool = profile_set(profile, n_per_class=max(per_class, profile.n_per_class), work_dir=work_dir)
    return pool.subset(first_per_class(pool.labels, per_class * len(run_classes(profile))))


def genq_images(
    model: nn.Module,
    teacher: str,
    pool: SyntheticSet,
    profile: Profile,
    n: int,
    drops: tuple[float, float] = DEFAULT_DROPS,
) -> torch.Tensor:
    """``n`` balanced images of GenQ's filter (energy drop, then BN sensitivity or patch entropy drop) applied
    by ``teacher`` to the first ``pool_per_class(n, drops, ...)`` images per class of ``pool``; the filtered view
    is saved in the pool's folder and reused."""
    per_class = pool_per_class(n, drops, len(run_classes(profile)))
    name = f"abl-{teacher_tag(teacher)}-e{drops[0]:g}-s{drops[1]:g}-pc{per_class}"
    prefix = pool.subset(first_per_class(pool.labels, per_class * len(run_classes(profile))))
    view = filtered_view(model, prefix, profile, name, drops)
    chosen = view.subset(first_per_class(view.labels, n))
    return chosen.images(size=profile.image_size, channels=profile.image_channels)


def data_free_images(model: nn.Module, teacher: str, profile: Profile, work_dir: Path) -> torch.Tensor:
    """GenQ's data-free calibration set: ``calib_size`` images of the label-prompt pool filtered by ``teacher``."""
    pool = label_pool(
        profile, pool_per_class(profile.calib_size, DEFAULT_DROPS, len(run_classes(profile))), work_dir
    )
    return genq_images(model, teacher, pool, profile, profile.calib_size)


def _ptq(
    model: nn.Module,
    teacher: str,
    images: torch.Tensor,
    source: str,
    bits: tuple[int, int],
    profile: Profile,
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
    seed: int | None = None,
) -> dict:
    """One cached PTQ point with the profile's settings, ``iters`` per block and ``seed`` (default: the
    profile's) for the reconstruction's batch order and drop masks."""
    run = profile_run(profile, teacher, bits, source, len(images), method=method)
    run = replace(run, iters=iters, seed=run.seed if seed is None else seed)
    return ptq_run(model, images, test, run, work_dir / "ptq")


# ---------------------------------------------------------------- the analyses


def n_synthetic(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    sizes: Sequence[int],
    bits: tuple[int, int],
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
) -> dict:
    """Fig. 5: PTQ accuracy against the number of filtered synthetic images, with Real Data at calib_size."""
    pool = label_pool(profile, pool_per_class(max(sizes), DEFAULT_DROPS, len(run_classes(profile))), work_dir)
    args = (bits, profile, method, iters, test, work_dir)
    rows = []
    for n in sizes:
        row = _ptq(model, teacher, genq_images(model, teacher, pool, profile, n), "genq", *args)
        rows.append({"n": n, "top1": row["top1"], "seconds": row["seconds"]})
    real = _ptq(model, teacher, real_images(profile, profile.calib_size, seed=profile.seed), "real", *args)
    return {
        "teacher": teacher,
        "w_bits": bits[0],
        "a_bits": bits[1],
        "rows": rows,
        "real": {"n": profile.calib_size, "top1": real["top1"]},
    }


def filter_strength(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    strengths: Sequence[float],
    n: int,
    bits: tuple[int, int],
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
) -> dict:
    """Fig. 6: a fixed ``n`` calibration images filtered by one stage alone at drop r, from N / (1 - r) images."""
    pool = label_pool(profile, pool_per_class(n, (max(strengths), 0.0), len(run_classes(profile))), work_dir)
    rows = []
    for stage in ("energy", "bn"):
        for r in strengths:
            drops = (r, 0.0) if stage == "energy" else (0.0, r)
            images = genq_images(model, teacher, pool, profile, n, drops)
            row = _ptq(
                model, teacher, images, f"genq_{stage}{r:g}", bits, profile, method, iters, test, work_dir
            )
            rows.append(
                {
                    "stage": stage,
                    "drop": r,
                    "n_generated": pool_per_class(n, drops, len(run_classes(profile)))
                    * len(run_classes(profile)),
                    "top1": row["top1"],
                }
            )
    return {"teacher": teacher, "w_bits": bits[0], "a_bits": bits[1], "n": n, "rows": rows}


def cross_model(
    models: dict[str, nn.Module],
    bits_of: dict[str, tuple[int, int]],
    profile: Profile,
    n: int,
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
) -> dict:
    """Table 5: images filtered by one teacher calibrate another; every (filter, quantized) pair."""
    pool = label_pool(profile, pool_per_class(n, DEFAULT_DROPS, len(run_classes(profile))), work_dir)
    rows = []
    for filter_teacher, filter_model in models.items():
        images = genq_images(filter_model, filter_teacher, pool, profile, n)
        for quant_teacher, quant_model in models.items():
            bits = bits_of[quant_teacher]
            source = f"genq_by_{filter_teacher}"
            row = _ptq(
                quant_model, quant_teacher, images, source, bits, profile, method, iters, test, work_dir
            )
            rows.append(
                {
                    "filter_teacher": filter_teacher,
                    "quant_teacher": quant_teacher,
                    "w_bits": bits[0],
                    "a_bits": bits[1],
                    "top1": row["top1"],
                }
            )
    return {"n": n, "rows": rows}


def data_scarce(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    shots: dict[int, torch.Tensor],
    style_images: dict[int, torch.Tensor],
    bits: tuple[int, int],
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
) -> dict:
    """Fig. 4 with PTQ: calibrate on k real images per class (``shots[k]``) versus on filtered style-token
    images learned from k shots (``style_images[k]``) and on data-free GenQ images."""
    args = (bits, profile, method, iters, test, work_dir)
    rows = []
    for k, images in shots.items():
        row = _ptq(model, teacher, images, f"real_shots_k{k}", *args)
        rows.append({"source": "real_shots", "k": k, "n": len(images), "top1": row["top1"]})
    for k, images in style_images.items():
        row = _ptq(model, teacher, images, f"genq_style_k{k}", *args)
        rows.append({"source": "genq_data_scarce", "k": k, "n": len(images), "top1": row["top1"]})
    free = data_free_images(model, teacher, profile, work_dir)
    row = _ptq(model, teacher, free, "genq", *args)
    rows.append({"source": "genq_data_free", "k": 0, "n": len(free), "top1": row["top1"]})
    return {"teacher": teacher, "w_bits": bits[0], "a_bits": bits[1], "rows": rows}


def seed_spread(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    seeds: Sequence[int],
    bits: tuple[int, int],
    method: str,
    iters: int,
    test: Split,
    work_dir: Path,
) -> dict:
    """The noise floor of the other analyses: the same calib_size GenQ and real images, reconstructed once per
    seed (batch order and drop masks change, the data do not); gaps smaller than this spread say nothing."""
    sets = {
        "genq": data_free_images(model, teacher, profile, work_dir),
        "real": real_images(profile, profile.calib_size, seed=profile.seed),
    }
    rows = []
    for source, images in sets.items():
        for seed in seeds:
            row = _ptq(model, teacher, images, source, bits, profile, method, iters, test, work_dir, seed)
            rows.append({"source": source, "seed": seed, "n": len(images), "top1": row["top1"]})
    spread = {}
    for source in sets:
        top1 = torch.tensor([r["top1"] for r in rows if r["source"] == source], dtype=torch.float64)
        std = float(top1.std()) if len(top1) > 1 else 0.0
        spread[source] = {"mean": float(top1.mean()), "std": std, "range": float(top1.max() - top1.min())}
    return {"teacher": teacher, "w_bits": bits[0], "a_bits": bits[1], "rows": rows, "spread": spread}


def _time_generation(pipe, model: nn.Module, profile: Profile, n_timed: int, bn_iters: int) -> dict:
    """Seconds per 1,000 images: GenQ generation alone, GenQ generation + filter per kept image, BN inversion."""
    classes = run_classes(profile)
    per_class = math.ceil(n_timed / len(classes))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        made = generate(
            pipe,
            list(classes),
            per_class,
            class_names=class_names(profile),
            out=Path(tmp) / "set",
            guidance_scale=profile.guidance_scale,
            steps=profile.gen_steps,
            seed=profile.seed,
            batch_size=profile.gen_batch_size,
            progress=False,
        )
        generated = time.perf_counter() - start
        kept = filter_set(model, made, profile.image_size, profile.image_channels, seed=profile.seed)
        filtered = time.perf_counter() - start
    shape = (profile.image_channels, profile.image_size, profile.image_size)
    start = time.perf_counter()
    bn_inversion(model, n_timed, shape, iters=bn_iters, lr=BN_INVERSION_LR, seed=profile.seed, progress=False)
    inverted = time.perf_counter() - start
    return {
        "genq_unfiltered": generated / len(made) * 1000,
        "genq": filtered / len(kept) * 1000,
        "bn_inversion": inverted / n_timed * 1000,
    }


def generation_cost(
    pipe, model: nn.Module, teacher: str, profile: Profile, n_timed: int, work_dir: Path
) -> dict:
    """Table 1: seconds per 1,000 calibration images (timed on ``n_timed`` fresh images, cached by settings)
    and the BN distance to ``teacher`` of calib_size images of each source, in batches of 100 (or the whole
    set when smaller). Filtered GenQ pays for the images its filter drops and for the filter itself."""
    bn_iters = BN_INVERSION_ITERS.get(profile.name, 500)
    key = {
        "profile": profile.name,
        "generator": pipeline_id(pipe),  # another generator is another cost
        "teacher": teacher,
        "n_timed": n_timed,
        "bn_iters": bn_iters,
        "gen_steps": profile.gen_steps,
        "gen_batch_size": profile.gen_batch_size,
        "threads": torch.get_num_threads(),
    }
    timing = cached_json(
        work_dir / "ablations",
        "generation-cost",
        key,
        lambda: _time_generation(pipe, model, profile, n_timed, bn_iters),
    )
    n, batch = profile.calib_size, min(100, profile.calib_size)
    rows = []
    for source in ("genq_unfiltered", "genq", "bn_inversion", "real"):
        images = calibration_images(source, teacher, model, profile, n, work_dir).images
        distance = set_bn_distance(model, images, batch, seed=profile.seed)
        rows.append(
            {
                "source": source,
                "seconds_per_1000": timing.get(source),
                "bn_distance": distance["mean"],
                "bn_distance_std": distance["std"],
                "n": n,
            }
        )
    return {
        "teacher": teacher,
        "n_timed": n_timed,
        "bn_inversion_iters": bn_iters,
        "threads": key["threads"],
        "rows": rows,
    }
