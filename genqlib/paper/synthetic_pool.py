"""GenQ's pool-and-filter policy, the one way every notebook gets filtered synthetic images.

To keep ``n`` images after a filter that drops the fractions ``drops`` per class, a pool of
``pool_per_class(n, drops, k)`` images per class is taken (the first ones of the shared set, so a larger
request reuses a smaller one's images) and filtered by the teacher; the first ``n`` class-balanced images of
what the filter keeps are used. Each filtered result is saved as a named view of the set's folder with its
cache key (teacher, images, drops, seed), and reused while the key matches.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from genqlib.datasets import class_names, run_classes
from genqlib.filters import filter_set, keep_count
from genqlib.generate import generate, load_pipeline
from genqlib.infra.result_cache import digest, make_key
from genqlib.paper.profiles import FILTER_DROPS, Profile, get_profile
from genqlib.store import SyntheticSet
from genqlib.zoo import teacher_tag


def set_folder(p: Profile, kind: str, work_dir: str | Path | None = None) -> Path:
    """Where the profile's synthetic set of ``kind`` lives: named by the kind and the sampling settings only,
    so every notebook and grid asking for it shares (and grows) one folder."""
    s = p.sampling
    return (
        Path(work_dir or p.work_dir)
        / "synthetic"
        / f"{p.name}-{kind}-g{s.guidance_scale}-s{s.steps}-seed{s.seed}"
    )


def profile_set(
    profile: str | Profile,
    prompts: str = "label",
    n_per_class: int | None = None,
    work_dir: str | Path | None = None,
    pipe=None,
    **kwargs,
) -> SyntheticSet:
    """The profile's synthetic set of kind ``prompts``, generated or resumed under ``work_dir/synthetic``.

    Notebooks share sets through this: the folder name depends on the prompt kind and the settings only, and a
    later call asking for more images per class extends the same run instead of starting over. The classes and
    their names are the profile's (``datasets.run_classes``, ``datasets.class_names``).
    """
    p = get_profile(profile)
    kwargs.setdefault("class_names", class_names(p))
    return generate(
        pipe if pipe is not None else load_pipeline(p.generator),
        kwargs.pop("classes", None) or list(run_classes(p)),
        n_per_class or p.n_per_class,
        out=set_folder(p, prompts, work_dir),
        prompts=prompts,
        **p.sampling.kwargs(),
        **kwargs,
    )


def first_per_class(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of the first ``n`` items in class-balanced order: the first n // k of each of the k
    classes, one more for the first n % k classes. Deterministic (no sampling), so a set's prefix is reused."""
    classes = labels.unique().tolist()
    chosen = []
    for rank, c in enumerate(classes):
        members = (labels == c).nonzero().flatten()
        k = n // len(classes) + (1 if rank < n % len(classes) else 0)
        if len(members) < k:
            raise ValueError(f"class {c} has {len(members)} items, {k} needed for a balanced {n}")
        chosen.append(members[:k])
    return torch.cat(chosen).sort().values


def pool_per_class(n: int, drops: tuple[float, float], n_classes: int) -> int:
    """The fewest images per class from which filtering with ``drops`` (per class) still leaves ``n`` balanced
    images: about the paper's N / (1 - r) for one stage, N / ((1 - r1)(1 - r2)) for two."""
    need = math.ceil(n / n_classes)
    per_class = need
    while keep_count(keep_count(per_class, drops[0]), drops[1]) < need:
        per_class += 1
    return per_class


def label_pool(profile: Profile, per_class: int, work_dir: str | Path | None = None) -> SyntheticSet:
    """The profile's shared label-prompt set with at least ``per_class`` images per class (grown if needed)."""
    return profile_set(profile, n_per_class=max(per_class, profile.n_per_class), work_dir=work_dir)


def filter_key(model: nn.Module, pool: SyntheticSet, profile: Profile, drops: tuple[float, float]) -> dict:
    """What a filtered view depends on: the teacher's weights, the images exactly as the filter sees them
    (a change of preprocessing is a change of key), the drop ratios and the seed."""
    images = pool.images(size=profile.image_size, channels=profile.image_channels)
    return make_key(
        {"drops": list(drops), "seed": profile.seed}, weights=digest(model), images=digest(images)
    )


def saved_view(pool: SyntheticSet, name: str, key: dict) -> SyntheticSet | None:
    """The view ``name`` of the pool's folder when it records ``key``; None (saying why) otherwise."""
    if name not in pool.list_views():
        return None
    view = SyntheticSet.open(pool.folder, view=name)
    if view.info.get("filter_key") == key:
        return view
    print(f"view {name} was filtered from other images, weights or settings: filtering again")
    return None


def filtered_view(
    model: nn.Module,
    pool: SyntheticSet,
    profile: Profile,
    name: str,
    drops: tuple[float, float] = FILTER_DROPS,
) -> SyntheticSet:
    """GenQ's filter of all of ``pool`` by ``model`` (energy, then BN sensitivity or patch entropy), saved as
    the view ``name`` of its folder with its ``filter_key``; a saved view with the same key is reused."""
    key = filter_key(model, pool, profile, drops)
    view = saved_view(pool, name, key)
    if view is not None:
        return view
    view = filter_set(
        model,
        pool,
        size=profile.image_size,
        channels=profile.image_channels,
        seed=profile.seed,
        energy_drop=drops[0],
        second_drop=drops[1],
    )
    view.info["filter_key"] = key
    view.save_view(name)
    return view


def genq_view(
    model: nn.Module,
    teacher: str,
    profile: Profile,
    n: int | None = None,
    drops: tuple[float, float] = FILTER_DROPS,
    pool: SyntheticSet | None = None,
    work_dir: str | Path | None = None,
) -> SyntheticSet:
    """GenQ's images for ``teacher``: ``n`` class-balanced images of the filter applied to the first
    ``pool_per_class(n, drops, ...)`` images per class of ``pool`` (default: the profile's label-prompt set).
    ``n=None`` filters the whole pool (the profile's ``n_per_class`` for the label set) and keeps all; the
    saved view's name is the result's ``view``, or its ``info["from_view"]`` when ``n`` picked a subset."""
    k = len(run_classes(profile))
    if pool is None:
        pool = label_pool(
            profile, profile.n_per_class if n is None else pool_per_class(n, drops, k), work_dir
        )
    if n is None:
        per_class = int(pool.labels.bincount().max())
    else:
        per_class = pool_per_class(n, drops, k)
        pool = pool.subset(first_per_class(pool.labels, per_class * k))
    name = f"genq-{teacher_tag(teacher)}-e{drops[0]:g}-s{drops[1]:g}-pc{per_class}"
    view = filtered_view(model, pool, profile, name, drops)
    return view if n is None else view.subset(first_per_class(view.labels, n), from_view=name)
