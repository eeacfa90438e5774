"""The paper's section-5 analyses in the mini world (notebook 06), and the data-scarce PTQ of notebook 03:
number of synthetic images, filter strength, cross-model transfer, the data-scarce curve and generation cost,
plus the seed spread of one PTQ point that says which of their gaps are larger than noise.

Every calibration set comes from ``genqlib.calibration`` / ``genqlib.pool`` (one pool-and-filter policy, views
saved in the shared label-prompt set) and every PTQ point from ``ptq_runs.ptq_run``, both cached, so a re-run
reuses them.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from genqlib.baselines import bn_inversion
from genqlib.cache import cached_json
from genqlib.calibration import calibration_set
from genqlib.data import Split
from genqlib.datasets import class_names, eval_split, real_images, run_classes
from genqlib.filters import filter_set
from genqlib.generate import generate, pipeline_id
from genqlib.metrics import set_bn_distance
from genqlib.pool import pool_per_class
from genqlib.profiles import FILTER_DROPS, Profile, get_profile, stage_defaults
from genqlib.ptq_runs import profile_run, ptq_run
from genqlib.zoo import load_teacher


def ablation_settings(profile: Profile) -> dict:
    """The profile's notebook-06 defaults (``profiles.ABLATIONS``) with ``iters`` resolved to a number."""
    settings = stage_defaults(profile, "ablations")
    settings["iters"] = settings["iters"] or profile.recon_iters
    return settings


def genq(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    n: int,
    work_dir: Path,
    drops: tuple[float, float] = FILTER_DROPS,
) -> torch.Tensor:
    """The registry's ``genq`` images (``calibration_set``) with filter ``drops``."""
    return calibration_set(model, "genq", n, profile, teacher, work_dir, drops=drops).images


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
    run = profile_run(profile, teacher, bits, source, len(images), method=method, iters=iters, seed=seed)
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
    args = (bits, profile, method, iters, test, work_dir)
    rows = []
    for n in sizes:
        row = _ptq(model, teacher, genq(model, teacher, profile, n, work_dir), "genq", *args)
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
    rows = []
    for stage in ("energy", "bn"):
        for r in strengths:
            drops = (r, 0.0) if stage == "energy" else (0.0, r)
            images = genq(model, teacher, profile, n, work_dir, drops)
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
    rows = []
    for filter_teacher, filter_model in models.items():
        images = genq(filter_model, filter_teacher, profile, n, work_dir)
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
    free = genq(model, teacher, profile, profile.calib_size, work_dir)
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
        "genq": genq(model, teacher, profile, profile.calib_size, work_dir),
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


def _time_generation(pipe, model: nn.Module, profile: Profile, n_timed: int, bn: dict) -> dict:
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
    bn_inversion(model, n_timed, shape, iters=bn["iters"], lr=bn["lr"], seed=profile.seed, progress=False)
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
    bn = stage_defaults(profile, "bn_inversion")
    key = {
        "profile": profile.name,
        "generator": pipeline_id(pipe),  # another generator is another cost
        "teacher": teacher,
        "n_timed": n_timed,
        "bn_iters": bn["iters"],
        "gen_steps": profile.gen_steps,
        "gen_batch_size": profile.gen_batch_size,
        "threads": torch.get_num_threads(),
    }
    timing = cached_json(
        work_dir / "ablations",
        "generation-cost",
        key,
        lambda: _time_generation(pipe, model, profile, n_timed, bn),
    )
    n, batch = profile.calib_size, min(100, profile.calib_size)
    rows = []
    for source in ("genq_unfiltered", "genq", "bn_inversion", "real"):
        images = calibration_set(model, source, n, profile, teacher, work_dir).images
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
        "bn_inversion_iters": bn["iters"],
        "threads": key["threads"],
        "rows": rows,
    }


DATA_SCARCE_SOURCES = ("genq_data_free", "genq_data_scarce", "real_shots_only")


def data_scarce_ptq(
    profile: str | Profile,
    teachers: Sequence[str],
    token_file: str | Path,
    k_shots: int,
    bits: tuple[int, int] = (2, 4),
    work_dir: str | Path | None = None,
    test: Split | None = None,
) -> dict[str, dict[str, dict]]:
    """Paper §4.2 in PTQ (notebook 03): for each teacher, BRECQ at ``bits`` calibrated on (a) ``calib_size``
    data-free GenQ images (the same run as notebook 04's ``genq`` row), (b) ``calib_size`` filtered images of
    the style token ``token_file`` (data-scarce GenQ) and (c) the ``k_shots`` real shots per class alone.
    Teacher -> source -> row (cached under ``work_dir/ptq``)."""
    p = get_profile(profile)
    work_dir = Path(work_dir or p.work_dir)
    test = test if test is not None else eval_split(p)
    n, n_shots = p.calib_size, k_shots * len(run_classes(p))
    sources = {  # row name -> (registry source, n, options); data-free keeps notebook 04's source name
        "genq_data_free": ("genq", "genq", n, {}),
        "genq_data_scarce": ("genq_data_scarce", "genq_style", n, {"token_file": token_file}),
        "real_shots_only": ("real_shots_only", "real_shots", n_shots, {}),
    }
    results: dict[str, dict[str, dict]] = {}
    for teacher in teachers:
        model = load_teacher(teacher)
        results[teacher] = {}
        for name, (label, source, size, options) in sources.items():
            images = calibration_set(model, source, size, p, teacher, work_dir, **options).images
            run = profile_run(p, teacher, bits, label, size)
            results[teacher][name] = ptq_run(model, images, test, run, work_dir / "ptq")
    return results
