"""Fashion-MNIST with genqlib's fixed splits, read from IDX files without torchvision.

Splits (fixed for good): ``private`` = official train images 0-49,999 (the teachers' training data and
the source of "Real Data" calibration samples), ``public`` = train images 50,000-59,999 (the only
images the generator ever sees), ``test`` = the official 10,000 test images (evaluation only).

Files are looked for in ``$GENQ_DATA``, then in the Debian package ``dataset-fashion-mnist``'s folder,
then (only when ``download=True``) fetched from the official mirror into ``$GENQ_DATA`` or
``~/.cache/genqlib/fashion-mnist``. Checksums are SHA-256 of the *decompressed* IDX bytes, so the
official ``.gz`` files and Debian's recompressed ones verify alike.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of the decompressed IDX payloads.
SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SPLITS = {"private": slice(0, 50_000), "public": slice(50_000, 60_000), "test": slice(0, 10_000)}


class DataNotFoundError(FileNotFoundError):
    """Fashion-MNIST files are missing or corrupt; the message names every way to get them."""


@dataclass(frozen=True)
class Split:
    """One split: ``images`` float32 in [0, 1] of shape (N, 1, 28, 28), ``labels`` int64 of shape (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0, per_class: bool = True) -> Split:
        """A reproducible random subset of ``n`` images, class-balanced when ``per_class``."""
        return Split(self.name, *self._take(subset_indices(self.labels, n, seed, per_class)))

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx], self.labels[idx]


def subset_indices(labels: torch.Tensor, n: int, seed: int = 0, per_class: bool = True) -> torch.Tensor:
    """Indices of ``n`` items drawn without replacement; balanced over classes when ``per_class``."""
    if not 0 < n <= len(labels):
        raise ValueError(f"n must be in 1..{len(labels)}, got {n}")
    gen = torch.Generator().manual_seed(seed)
    if not per_class:
        return torch.randperm(len(labels), generator=gen)[:n].sort().values
    classes = labels.unique()
    chosen = []
    for rank, c in enumerate(classes.tolist()):
        members = (labels == c).nonzero().flatten()
        k = n // len(classes) + (1 if rank < n % len(classes) else 0)
        chosen.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(chosen).sort().values


def _candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("GENQ_DATA"):
        dirs.append(Path(os.environ["GENQ_DATA"]))
    dirs.append(DEBIAN_DIR)
    return dirs


def _download_dir() -> Path:
    return Path(os.environ.get("GENQ_DATA") or Path.home() / ".cache" / "genqlib" / "fashion-mnist")


def _missing_message(detail: str) -> str:
    return (
        f"Fashion-MNIST not usable: {detail}\n"
        "Get it in one of three ways:\n"
        "  1. set GENQ_DATA to a folder holding the four official IDX .gz files;\n"
        "  2. install the Debian package: apt-get install dataset-fashion-mnist "
        f"(files land in {DEBIAN_DIR});\n"
        "  3. allow the official download: load_fashion_mnist(..., download=True) "
        "(or GENQ_DOWNLOAD=1), checked against SHA-256."
    )


def _read_idx(path: Path, key: str) -> np.ndarray:
    """Decompress and checksum one IDX file; parse its header into an array."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:
        raise DataNotFoundError(_missing_message(f"{path} cannot be read ({err})")) from err
    if hashlib.sha256(raw).hexdigest() != SHA256[key]:
        raise DataNotFoundError(_missing_message(f"{path} fails its SHA-256 check (corrupt file?)"))
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(key: str, download: bool) -> Path:
    for folder in _candidate_dirs():
        if (folder / FILES[key]).is_file():
            return folder / FILES[key]
    if download:
        target = _download_dir() / FILES[key]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        urllib.request.urlretrieve(DOWNLOAD_URL + FILES[key], tmp)
        tmp.replace(target)
        return target
    looked = ", ".join(str(d) for d in _candidate_dirs())
    raise DataNotFoundError(_missing_message(f"{FILES[key]} not found in {looked}"))


_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _load_part(part: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if part not in _CACHE:
        images = _read_idx(_find(f"{part}_images", download), f"{part}_images")
        labels = _read_idx(_find(f"{part}_labels", download), f"{part}_labels")
        _CACHE[part] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return _CACHE[part]


def load_fashion_mnist(split: str, download: bool | None = None) -> Split:
    """Load one of the fixed splits ``private``, ``public`` or ``test`` as float images in [0, 1]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if download is None:
        download = os.environ.get("GENQ_DOWNLOAD", "") == "1"
    images, labels = _load_part("test" if split == "test" else "train", download)
    rows = SPLITS[split]
    return Split(split, images[rows].unsqueeze(1).float() / 255.0, labels[rows].clone())
