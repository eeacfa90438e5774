"""A profile's data, whatever the dataset: class names, the classes a run uses, real images, the eval set.

Every stage asks here instead of naming a dataset: ``fashion_mnist`` profiles read ``genqlib.data`` (roles
``train`` = the private split, ``eval`` = the test split), ``imagenet`` profiles read ``genqlib.imagenet``
(``train`` = the train folder, ``eval`` = the val folder) at the profile's ``image_size``.
"""

from __future__ import annotations

from genqlib.data import Split
from genqlib.profiles import Profile, get_profile

ROLES = ("train", "eval")
_CACHE: dict[tuple, Split] = {}


def class_names(profile: str | Profile) -> tuple[str, ...]:
    """Every class name of the profile's dataset, in label order (10 for Fashion-MNIST, 1,000 for ImageNet)."""
    p = get_profile(profile)
    if p.dataset == "fashion_mnist":
        from genqlib.data import CLASS_NAMES

        return CLASS_NAMES
    if p.dataset == "imagenet":
        from genqlib import imagenet

        return imagenet.class_names()
    raise ValueError(f"unknown dataset {p.dataset!r} in profile {p.name!r}")


def num_classes(profile: str | Profile) -> int:
    """The size of the label space (the classifiers' output width)."""
    return len(class_names(profile))


def run_classes(profile: str | Profile) -> tuple[int, ...]:
    """The class indices the run generates, calibrates and evaluates on: ``profile.classes`` or all."""
    p = get_profile(profile)
    return tuple(p.classes) if p.classes is not None else tuple(range(num_classes(p)))


def real_split(profile: str | Profile, role: str, n: int | None = None, seed: int | None = None) -> Split:
    """Real images of ``role`` (``train`` or ``eval``), of the run's classes, a balanced random ``n`` of them
    when given (seeded by ``seed``, default the profile's), float (N, C, S, S) in [0, 1]."""
    p = get_profile(profile)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    seed = p.seed if seed is None else seed
    key = (p.dataset, p.imagenet_dir, p.image_size, p.classes, role, n, seed)
    if key in _CACHE:
        return _CACHE[key]
    if p.dataset == "fashion_mnist":
        from genqlib.data import load_fashion_mnist

        split = load_fashion_mnist("private" if role == "train" else "test")
        if p.classes is not None:
            import torch

            keep = torch.isin(split.labels, torch.tensor(p.classes))
            split = Split(split.name, split.images[keep], split.labels[keep])
        split = split if n is None else split.subset(n, seed=seed)
    elif p.dataset == "imagenet":
        from genqlib.imagenet import load_imagenet

        role_dir = "train" if role == "train" else "val"
        split = load_imagenet(role_dir, p.image_size, p.imagenet_dir, n=n, seed=seed, classes=p.classes)
    else:
        raise ValueError(f"unknown dataset {p.dataset!r} in profile {p.name!r}")
    _CACHE[key] = split
    return split


def eval_split(profile: str | Profile) -> Split:
    """The profile's evaluation set: all of it when ``eval_size`` is None, else a balanced subset."""
    p = get_profile(profile)
    return real_split(p, "eval", n=p.eval_size, seed=p.seed)


def real_images(profile: str | Profile, n: int, seed: int | None = None):
    """``n`` class-balanced real training images (the "Real Data" calibration row)."""
    return real_split(profile, "train", n=n, seed=seed).images
