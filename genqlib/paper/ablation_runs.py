"""The paper's section-5 analyses (notebook 06) and the data-scarce PTQ of notebook 03, at one setting where
the calibration sources differ beyond seed noise (the profile's ``ablations``, picked by ``genqlib.paper.pilot``):
number of synthetic images (Fig. 5), filter strength (Fig. 6), cross-model transfer (Table 5), the
data-scarce curve (Fig. 4) and generation cost (Table 1).

Every PTQ point is a calibration source spec (``calibration.parse_source``: ``genq``, ``genq@0.5,0.3``,
``genq_style@5``, ``real``...) reconstructed once per seed of the ``Setting``; each analysis returns one row
per seed, so the tables compute each cell's mean, spread and verdict from them. Points are cached runs
(``ptq_runs.ptq_run``, filed under the spec), shared with notebook 04 and the pilot: a point either of them
already measured is read, not recomputed.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genqlib.baselines import bn_inversion
from genqlib.datasets import class_names, eval_split, run_classes
from genqlib.fashion_mnist import Split
from genqlib.filters import filter_set
from genqlib.generate import generate, pipeline_id
from genqlib.infra.result_cache import cached_json
from genqlib.metrics import set_bn_distance
from genqlib.paper.calibration import calibration_set, genq_spec, spec_set
from genqlib.paper.profiles import Profile, get_profile
from genqlib.paper.ptq_runs import PTQRun, PTQTask, profile_run, ptq_runs
from genqlib.paper.style_token import learn_profile_tokens
from genqlib.paper.synthetic_pool import pool_per_class
from genqlib.zoo import load_teacher


@dataclass(frozen=True)
class Setting:
    """Where the analyses measure: bit widths, calibration images, reconstruction method and iterations per
    block, and the seeds every point is reconstructed with (one row each). ``headline``: the widths of teachers
    that run elsewhere than ``bits`` (notebook 04's per-teacher headline, the profile's ``ptq``), so the
    analyses that span teachers measure each where notebook 04 does."""

    profile: Profile
    bits: tuple[int, int]
    n: int
    method: str
    iters: int
    seeds: tuple[int, ...]
    test: Split
    work_dir: Path
    headline: dict[str, tuple[int, int]] = field(default_factory=dict)

    def bits_for(self, teacher: str) -> tuple[int, int]:
        """The (weight, activation) widths ``teacher`` is reconstructed at: its headline, else ``bits``."""
        return self.headline.get(teacher, self.bits)


def ablation_setting(
    profile: str | Profile,
    bits: Sequence[int] | None = None,
    n: int | None = None,
    method: str | None = None,
    iters: int | None = None,
    seeds: Sequence[int] | None = None,
    test: Split | None = None,
    work_dir: str | Path | None = None,
) -> Setting:
    """The profile's ``ablations`` setting (``None`` there: the profile's own calib_size and
    recon_iters), each argument overriding one field. Without ``bits`` every teacher with a headline width in
    the profile's ``ptq`` runs at it; with ``bits`` every teacher runs at those."""
    p = get_profile(profile)
    d = p.ablations
    headline = {} if bits else {t: tuple(b) for t, b in p.ptq.headline}
    return Setting(
        profile=p,
        bits=tuple(bits or d.bits),
        n=n or d.n_calib or p.calib_size,
        method=method or d.method,
        iters=iters or d.iters or p.recon_iters,
        seeds=tuple(seeds or d.seeds),
        test=test if test is not None else eval_split(p),
        work_dir=Path(work_dir or p.work_dir),
        headline=headline,
    )


@dataclass(frozen=True)
class Point:
    """One PTQ point of an analysis: ``images`` filed as source ``spec``, reconstructed on ``teacher``'s
    ``model`` (at ``bits``, default the setting's for that teacher); ``tags`` head each of its rows."""

    model: nn.Module
    teacher: str
    spec: str
    images: torch.Tensor
    tags: dict
    bits: tuple[int, int] | None = None


def _run(point: Point, seed: int, s: Setting) -> PTQRun:
    bits = point.bits or s.bits_for(point.teacher)
    n = len(point.images)
    return profile_run(s.profile, point.teacher, bits, point.spec, n, s.method, iters=s.iters, seed=seed)


def measure(points: Sequence[Point], s: Setting) -> list[dict]:
    """Every point reconstructed once per seed of ``s`` (cached runs, the missing ones computed in parallel by
    ``ptq_runs``): per point and seed, a row of its tags, seed, top-1, agreement with the FP model,
    reconstruction seconds, and the thread count and machine the run was made on (None in a run cached before
    those were recorded), which say whether the row repeats bit for bit elsewhere."""
    pairs = [(point, seed) for point in points for seed in s.seeds]
    tasks = [PTQTask(point.model, point.images, _run(point, seed, s)) for point, seed in pairs]
    rows = ptq_runs(tasks, s.test, s.work_dir / "ptq")
    kept, recorded = ("top1", "agreement", "seconds"), ("threads", "machine")
    return [
        {**point.tags, "seed": seed, **{k: row[k] for k in kept}, **{k: row.get(k) for k in recorded}}
        for (point, seed), row in zip(pairs, rows, strict=True)
    ]


def _images(model: nn.Module, teacher: str, spec: str, n: int, s: Setting) -> torch.Tensor:
    return spec_set(model, spec, n, s.profile, teacher, s.work_dir).images


def _where(teacher: str, bits: tuple[int, int]) -> dict:
    return {"teacher": teacher, "w_bits": bits[0], "a_bits": bits[1]}


# ---------------------------------------------------------------- the analyses


def n_synthetic(model: nn.Module, teacher: str, s: Setting, sizes: Sequence[int]) -> dict:
    """Fig. 5: PTQ on n filtered GenQ images and on n real images, for each n in ``sizes``."""
    points = [
        Point(model, teacher, spec, _images(model, teacher, spec, n, s), {"source": spec, "n": n})
        for n in sizes
        for spec in ("genq", "real")
    ]
    return {**_where(teacher, s.bits_for(teacher)), "rows": measure(points, s)}


def filter_strength(model: nn.Module, teacher: str, s: Setting, drops: Sequence[tuple[float, float]]) -> dict:
    """Fig. 6: ``s.n`` GenQ images kept at each (energy, BN-sensitivity) drop pair, from the
    ``n / ((1 - e)(1 - b))`` generated images the pool policy needs."""
    n_classes = len(run_classes(s.profile))
    points = []
    for pair in drops:
        spec = genq_spec(pair)
        generated = pool_per_class(s.n, pair, n_classes) * n_classes
        tags = {"drops": list(pair), "source": spec, "n_generated": generated}
        points.append(Point(model, teacher, spec, _images(model, teacher, spec, s.n, s), tags))
    return {**_where(teacher, s.bits_for(teacher)), "n": s.n, "rows": measure(points, s)}


def cross_model(models: dict[str, nn.Module], bits_of: dict[str, tuple[int, int]], s: Setting) -> dict:
    """Table 5: GenQ images filtered by one teacher calibrate another; every (filter, quantized) pair. The
    diagonal is the plain ``genq`` point (the same run as notebook 04's)."""
    points = []
    for filter_teacher, filter_model in models.items():
        images = _images(filter_model, filter_teacher, "genq", s.n, s)
        for quant_teacher, quant_model in models.items():
            spec = "genq" if filter_teacher == quant_teacher else f"genq_by_{filter_teacher}"
            bits = bits_of[quant_teacher]
            tags = {
                "filter_teacher": filter_teacher,
                "quant_teacher": quant_teacher,
                "w_bits": bits[0],
                "a_bits": bits[1],
            }
            points.append(Point(quant_model, quant_teacher, spec, images, tags, bits))
    return {"n": s.n, "rows": measure(points, s)}


def data_scarce(model: nn.Module, teacher: str, s: Setting, shots: Sequence[int]) -> dict:
    """Fig. 4 with PTQ: for each k in ``shots``, the k real images per class alone versus ``s.n`` filtered
    images generated with a style token learned from those k shots; and data-free GenQ (k = 0)."""
    n_classes = len(run_classes(s.profile))
    learn_profile_tokens(s.profile, shots, s.n, s.work_dir)  # missing tokens: one-thread workers
    wanted = [("genq_data_free", "genq", 0, s.n)]  # (row source, spec, k, images)
    for k in shots:
        wanted += [
            ("real_shots", "real_shots", k, k * n_classes),
            ("genq_data_scarce", f"genq_style@{k}", k, s.n),
        ]
    points = [
        Point(model, teacher, spec, _images(model, teacher, spec, n, s), {"source": name, "k": k, "n": n})
        for name, spec, k, n in wanted
    ]
    return {**_where(teacher, s.bits_for(teacher)), "rows": measure(points, s)}


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
            **profile.sampling.kwargs(),
            progress=False,
        )
        generated = time.perf_counter() - start
        kept = filter_set(model, made, profile.image_size, profile.image_channels, seed=profile.seed)
        filtered = time.perf_counter() - start
    shape = (profile.image_channels, profile.image_size, profile.image_size)
    start = time.perf_counter()
    bn_inversion(model, n_timed, shape, iters=bn.iters, lr=bn.lr, seed=profile.seed, progress=False)
    inverted = time.perf_counter() - start
    return {
        "genq_unfiltered": generated / len(made) * 1000,
        "genq": filtered / len(kept) * 1000,
        "bn_inversion": inverted / n_timed * 1000,
    }


def generation_cost(
    pipe, model: nn.Module, teacher: str, profile: Profile, n_timed: int, work_dir: Path, n: int | None = None
) -> dict:
    """Table 1: seconds per 1,000 calibration images (timed on ``n_timed`` fresh images, cached by settings)
    and the BN distance to ``teacher`` of ``n`` images of each source (default: calib_size; notebook 06 passes
    its setting's), in batches of 100 (or the whole set when smaller). Filtered GenQ pays for the images its
    filter drops and for the filter itself."""
    bn = profile.bn_inversion
    key = {
        "profile": profile.name,
        "generator": pipeline_id(pipe),  # another generator is another cost
        "teacher": teacher,
        "n_timed": n_timed,
        "bn_iters": bn.iters,
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
    n = n or profile.calib_size
    batch = min(100, n)
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
        "bn_inversion_iters": bn.iters,
        "threads": key["threads"],
        "rows": rows,
    }


DATA_SCARCE_SOURCES = ("genq_data_free", "genq_data_scarce", "real_shots_only")


def data_scarce_ptq(s: Setting, teachers: Sequence[str], token_file: str | Path, k_shots: int) -> list[dict]:
    """Paper §4.2 in PTQ (notebook 03): for each teacher, PTQ at ``s`` calibrated on (a) ``s.n`` data-free
    GenQ images (notebook 04's ``genq`` point), (b) ``s.n`` filtered images of the style token ``token_file``
    (data-scarce GenQ) and (c) the ``k_shots`` real shots per class alone; one row per seed."""
    n_classes = len(run_classes(s.profile))
    points = []
    for teacher in teachers:
        model = load_teacher(teacher)
        sets = {  # row name -> (spec the run is filed under, images)
            "genq_data_free": ("genq", _images(model, teacher, "genq", s.n, s)),
            "genq_data_scarce": (
                f"genq_style@{k_shots}",
                calibration_set(
                    model, "genq_style", s.n, s.profile, teacher, s.work_dir, token_file=token_file
                ).images,
            ),
            "real_shots_only": ("real_shots", _images(model, teacher, "real_shots", k_shots * n_classes, s)),
        }
        for name, (spec, images) in sets.items():
            tags = {**_where(teacher, s.bits_for(teacher)), "source": name, "n": len(images)}
            points.append(Point(model, teacher, spec, images, tags))
    return measure(points, s)
