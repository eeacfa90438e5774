"""Calibration sources by name: ``calibration_set(model, source, n, profile)`` for every way of getting
calibration images, data-free and data-scarce.

Each source is one small function registered under its name (``SOURCES``); GenQ's sources go through the one
pool-and-filter policy of ``genqlib.paper.synthetic_pool``, and the expensive ones (BN inversion, style tokens, filtered views)
through ``genqlib.infra.result_cache``. Every source returns exactly ``n`` images of the profile's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genqlib.baselines import (
    BN_BATCH_SIZE,
    Inversion,
    bn_inversion,
    gaussian_noise,
    join_inversions,
    pixel_stats,
)
from genqlib.datasets import few_shots, real_split, run_classes
from genqlib.infra.result_cache import cached_tensors, digest, entry_path, make_key
from genqlib.infra.workers import in_worker, run_all
from genqlib.paper.profiles import FILTER_DROPS, Profile, get_profile
from genqlib.paper.settings import as_dict
from genqlib.paper.synthetic_pool import first_per_class, genq_view, label_pool, pool_per_class
from genqlib.store import SyntheticSet
from genqlib.zoo import teacher_tag


@dataclass
class Calibration:
    """Calibration images of one source, and what is worth printing about how they were made."""

    source: str
    images: torch.Tensor
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What a source is asked for: ``n`` images for ``model`` (named ``teacher``) under ``profile``, with the
    caches under ``work_dir`` and the source's own ``options``."""

    model: nn.Module
    teacher: str
    n: int
    profile: Profile
    work_dir: Path
    options: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        p = self.profile
        return (p.image_channels, p.image_size, p.image_size)


Source = Callable[[Request], Calibration]
SOURCES: dict[str, Source] = {}


def register(name: str) -> Callable[[Source], Source]:
    """Decorator: add a source to ``SOURCES`` under ``name`` (a name registered twice raises)."""

    def add(source: Source) -> Source:
        if name in SOURCES:
            raise ValueError(f"calibration source {name!r} is already registered")
        SOURCES[name] = source
        return source

    return add


def calibration_set(
    model: nn.Module,
    source: str,
    n: int,
    profile: str | Profile = "mini",
    teacher: str | None = None,
    work_dir: str | Path | None = None,
    **options: object,
) -> Calibration:
    """``n`` calibration images from ``source`` (a name in ``SOURCES``) for ``model``, seeded by the profile.

    ``teacher`` names the model in cache file names (default: its digest); ``options`` go to the source
    (``iters`` for ``bn_inversion``, ``k_shots`` and ``token_file`` for ``genq_style``, ``drops`` for ``genq``).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown calibration source {source!r}; choose one of {sorted(SOURCES)}")
    p = get_profile(profile)
    request = Request(model, teacher or digest(model)[:8], n, p, Path(work_dir or p.work_dir), options)
    calib = SOURCES[source](request)
    if len(calib.images) != n:
        raise RuntimeError(f"source {source!r} returned {len(calib.images)} images, {n} were asked for")
    return calib


def parse_source(spec: str) -> tuple[str, dict]:
    """A source spec as the grids and result rows name it: ``"genq@0.5,0.3"`` is GenQ with filter drops
    (0.5, 0.3), ``"genq_style@5"`` GenQ with a style token learned from 5 real images per class, a plain
    name is itself. Returns ``(source, options)`` for ``calibration_set``."""
    base, _, arg = spec.partition("@")
    if not arg:
        return base, {}
    if base == "genq":
        drops = tuple(float(x) for x in arg.split(","))
        if len(drops) != 2:
            raise ValueError(f"{spec!r}: genq@ takes two drop ratios, e.g. genq@0.5,0.5")
        return base, {"drops": drops}
    if base == "genq_style":
        return base, {"k_shots": int(arg)}
    raise ValueError(f"{spec!r}: only genq@E,B and genq_style@K have variants")


def genq_spec(drops: tuple[float, float]) -> str:
    """The spec of GenQ at filter ``drops``: ``genq`` at the default, ``genq_unfiltered`` with no drop,
    ``genq@E,B`` otherwise (the names the cached runs are filed under)."""
    if tuple(drops) == tuple(FILTER_DROPS):
        return "genq"
    if not any(drops):
        return "genq_unfiltered"
    return f"genq@{drops[0]:g},{drops[1]:g}"


def spec_set(
    model: nn.Module,
    spec: str,
    n: int,
    profile: str | Profile = "mini",
    teacher: str | None = None,
    work_dir: str | Path | None = None,
) -> Calibration:
    """``calibration_set`` for a source spec (``parse_source``)."""
    source, options = parse_source(spec)
    return calibration_set(model, source, n, profile, teacher, work_dir, **options)


def _view_images(request: Request, view: SyntheticSet, source: str) -> Calibration:
    images = view.images(size=request.profile.image_size, channels=request.profile.image_channels)
    return Calibration(
        source, images, {"folder": str(view.folder), "view": view.view or view.info.get("from_view")}
    )


# ---------------------------------------------------------------- data-free


@register("real")
def real(request: Request) -> Calibration:
    """Class-balanced private-set images: the paper's "Real Data" row."""
    p = request.profile
    return Calibration("real", real_split(p, "train", n=request.n, seed=p.seed).images, {"split": "train"})


@register("noise")
def noise(request: Request) -> Calibration:
    """Gaussian noise that is N(0, 1) after the model's input normalisation (not clamped to [0, 1])."""
    mean, std = pixel_stats(request.model)
    images = gaussian_noise(request.n, request.shape, seed=request.profile.seed, mean=mean, std=std)
    return Calibration("noise", images, {"clamped": False})


@register("bn_inversion")
def bn_inverted(request: Request) -> Calibration:
    """ZeroQ-style images optimised to match the BN running statistics, cached under ``work_dir/bn_inversion``
    (``iters`` option: Adam steps per batch, default by profile)."""
    inv = cached_bn_inversion(request, **request.options)
    return Calibration(
        "bn_inversion", inv.images, {"seconds": inv.seconds, "loss": [inv.loss_start, inv.loss_end]}
    )


def _bn_inversion_entry(request: Request, iters: int | None) -> tuple[dict, str, dict]:
    """(settings, cache label, cache key) of ``request``'s BN-inversion set."""
    defaults = as_dict(request.profile.bn_inversion)
    settings = {
        "n": request.n,
        "shape": list(request.shape),
        "iters": defaults["iters"] if iters is None else iters,
        "lr": defaults["lr"],
        "seed": request.profile.seed,
    }
    label = f"{teacher_tag(request.teacher)}-n{request.n}-seed{settings['seed']}-it{settings['iters']}"
    return settings, label, make_key(settings, weights=digest(request.model))


def cached_bn_inversion(request: Request, iters: int | None = None) -> Inversion:
    """``bn_inversion`` of ``request``, keyed by its settings and the model's weights; a re-run loads the
    images with the original time and losses. The set is joined from its batches, each cached on its own
    (``cached_bn_batch``), so ``bn_inversion_sets`` can make the batches of one set in several workers."""
    _, label, key = _bn_inversion_entry(request, iters)

    def compute() -> tuple[dict[str, torch.Tensor], dict]:
        parts = [cached_bn_batch(request, b, iters) for b in range(_bn_batches(request))]
        return _stored(join_inversions(parts))

    tensors, meta, _ = cached_tensors(request.work_dir / "bn_inversion", label, key, compute)
    return Inversion(tensors["images"], **meta)


def cached_bn_batch(request: Request, batch: int, iters: int | None = None) -> Inversion:
    """Batch ``batch`` of ``request``'s BN-inversion set, cached on its own."""
    settings, label, key = _bn_inversion_entry(request, iters)

    def compute() -> tuple[dict[str, torch.Tensor], dict]:
        kwargs = {k: settings[k] for k in ("iters", "lr", "seed")}
        model, n, shape = request.model, request.n, request.shape
        return _stored(bn_inversion(model, n, shape, progress=not in_worker(), batches=[batch], **kwargs))

    folder = request.work_dir / "bn_inversion" / "batches"
    tensors, meta, _ = cached_tensors(folder, f"{label}-b{batch}", {**key, "batch": batch}, compute)
    return Inversion(tensors["images"], **meta)


def _bn_batches(request: Request) -> int:
    """How many batches ``bn_inversion`` splits ``request.n`` images into (at its default batch size)."""
    return -(-request.n // BN_BATCH_SIZE)


def _stored(inv: Inversion) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of an inversion as ``cached_tensors`` stores it."""
    meta = {k: getattr(inv, k) for k in ("seconds", "loss_start", "loss_end", "settings", "loss_curve")}
    return {"images": inv.images}, meta


def bn_inversion_sets(
    models: dict[str, nn.Module],
    n: int,
    profile: str | Profile = "mini",
    work_dir: str | Path | None = None,
    iters: int | None = None,
    jobs: int | None = None,
) -> None:
    """Make the BN-inversion sets of several teachers (``{name: model}``) that are not cached yet, batch by
    batch in one-thread worker processes, one per core (``genqlib.infra.workers.run_all``), as the PTQ runs are: the
    sets do not depend on the caller's thread count, and the batches of every set share the cores (a larger
    teacher's set no longer leaves a core idle). ``calibration_set`` then joins and loads them."""
    p = get_profile(profile)
    options = {} if iters is None else {"iters": iters}
    missing = []
    for teacher, model in models.items():
        request = Request(model, teacher, n, p, Path(work_dir or p.work_dir), options)
        _, label, key = _bn_inversion_entry(request, iters)
        if not entry_path(request.work_dir / "bn_inversion", label, key, ".safetensors").exists():
            missing += [(request, b, iters) for b in range(_bn_batches(request))]
    run_all(cached_bn_batch, missing, jobs, desc="BN inversion batches")


@register("genq_unfiltered")
def genq_unfiltered(request: Request) -> Calibration:
    """The first ``n`` class-balanced label-prompt images of the pool GenQ's filter would start from."""
    k = len(run_classes(request.profile))
    pool = label_pool(request.profile, pool_per_class(request.n, FILTER_DROPS, k), request.work_dir)
    return _view_images(request, pool.subset(first_per_class(pool.labels, request.n)), "genq_unfiltered")


@register("genq")
def genq(request: Request) -> Calibration:
    """Data-free GenQ: label-prompt images filtered by the model (``drops`` option, default FILTER_DROPS)."""
    drops = tuple(request.options.get("drops", FILTER_DROPS))
    p, teacher = request.profile, request.teacher
    return _view_images(
        request, genq_view(request.model, teacher, p, request.n, drops, work_dir=request.work_dir), "genq"
    )


# ---------------------------------------------------------------- data-scarce


@register("real_shots")
def real_shots(request: Request) -> Calibration:
    """The few real images alone: ``n / classes`` private-set shots per class (``n`` must divide evenly)."""
    p = request.profile
    k, rest = divmod(request.n, len(run_classes(p)))
    if rest or k == 0:
        raise ValueError(
            f"real_shots needs n a multiple of the {len(run_classes(p))} classes, got {request.n}"
        )
    return Calibration("real_shots", few_shots(p, k, seed=p.seed).images, {"k_shots": k})


@register("genq_style")
def genq_style(request: Request) -> Calibration:
    """Data-scarce GenQ: images generated with a style token learned from ``k_shots`` real images per class
    (option, default 1; or a ready ``token_file``), filtered by the model like ``genq``."""
    from genqlib.paper.style_token import generate_style_set, learn_profile_token, style_per_class

    p, k = request.profile, request.options.get("k_shots", 1)
    token_file = request.options.get("token_file") or learn_profile_token(p, k, request.work_dir).path
    pool = generate_style_set(p, token_file, style_per_class(p, request.n), request.work_dir)
    view = genq_view(request.model, request.teacher, p, request.n, pool=pool)
    calib = _view_images(request, view, "genq_style")
    calib.info["token_file"] = str(token_file)
    return calib
