"""A run's real data, whatever the dataset: class names, the classes a run uses, real images, the eval set.

Every stage asks here instead of naming a dataset, with a ``DataSpec`` (which dataset, at what size, which
classes, how many eval images, the seed) or any object carrying one as ``.data`` (a paper profile does):
``fashion_mnist`` reads ``genqlib.fashion_mnist`` (roles ``train`` = the private split, ``eval`` = the test
split), ``imagenet`` reads ``genqlib.imagenet`` (``train`` = the train folder, ``eval`` = the val folder) at
``image_size``. ``real_split`` is the one door to real images: the "Real Data" calibration row, the few real
images of the data-scarce setting and QAT's real training set all come through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from genqlib.fashion_mnist import Split

ROLES = ("train", "eval")
DATASETS = ("fashion_mnist", "imagenet")
_CACHE: dict[tuple, Split] = {}


@dataclass(frozen=True)
class DataSpec:
    """Which real data a run reads. ``classes`` None means every class of the dataset; ``eval_size`` None the
    whole evaluation set; ``imagenet_dir`` None means ``$GENQ_IMAGENET``; ``seed`` draws the balanced subsets."""

    dataset: str = "fashion_mnist"
    image_size: int = 28
    classes: tuple[int, ...] | None = None
    eval_size: int | None = None
    imagenet_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}")


def data_spec(data: DataSpec | object) -> DataSpec:
    """``data`` itself when it is a ``DataSpec``, else its ``.data`` (a profile's); anything else raises."""
    if isinstance(data, DataSpec):
        return data
    spec = getattr(data, "data", None)
    if isinstance(spec, DataSpec):
        return spec
    raise TypeError(
        f"expected a DataSpec or an object with a .data DataSpec (a profile: genqlib.get_profile(name)), "
        f"got {type(data).__name__}"
    )


def class_names(data: DataSpec | object) -> tuple[str, ...]:
    """Every class name of the dataset, in label order (10 for Fashion-MNIST, 1,000 for ImageNet)."""
    if data_spec(data).dataset == "fashion_mnist":
        from genqlib.fashion_mnist import CLASS_NAMES

        return CLASS_NAMES
    from genqlib import imagenet

    return imagenet.class_names()


def num_classes(data: DataSpec | object) -> int:
    """The size of the label space (the classifiers' output width)."""
    return len(class_names(data))


def run_classes(data: DataSpec | object) -> tuple[int, ...]:
    """The class indices the run generates, calibrates and evaluates on: ``classes`` or all."""
    d = data_spec(data)
    return tuple(d.classes) if d.classes is not None else tuple(range(num_classes(d)))


def real_split(data: DataSpec | object, role: str, n: int | None = None, seed: int | None = None) -> Split:
    """Real images of ``role`` (``train`` or ``eval``), of the run's classes, a balanced random ``n`` of them
    when given (seeded by ``seed``, default the spec's), float (N, C, S, S) in [0, 1]."""
    d = data_spec(data)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    seed = d.seed if seed is None else seed
    key = (d.dataset, d.imagenet_dir, d.image_size, d.classes, role, n, seed)
    if key in _CACHE:
        return _CACHE[key]
    if d.dataset == "fashion_mnist":
        from genqlib.fashion_mnist import load_fashion_mnist

        split = load_fashion_mnist("private" if role == "train" else "test")
        if d.classes is not None:
            import torch

            keep = torch.isin(split.labels, torch.tensor(d.classes))
            split = Split(split.name, split.images[keep], split.labels[keep])
        split = split if n is None else split.subset(n, seed=seed)
    else:
        from genqlib.imagenet import load_imagenet

        role_dir = "train" if role == "train" else "val"
        split = load_imagenet(role_dir, d.image_size, d.imagenet_dir, n=n, seed=seed, classes=d.classes)
    _CACHE[key] = split
    return split


def eval_split(data: DataSpec | object) -> Split:
    """The evaluation set: all of it when ``eval_size`` is None, else a balanced subset."""
    d = data_spec(data)
    return real_split(d, "eval", n=d.eval_size, seed=d.seed)


def few_shots(data: DataSpec | object, k: int, seed: int | None = None) -> Split:
    """``k`` real training images per run class (the data-scarce setting's "few real images", the style
    token's training shots), drawn balanced by ``real_split``."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (shots per class), got {k!r}")
    return real_split(data, "train", n=k * len(run_classes(data)), seed=seed)
