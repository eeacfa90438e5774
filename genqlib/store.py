"""SyntheticSet: a folder of PNG images with a ``manifest.jsonl``, written atomically and resumable.

Folder layout::

    run.json         the run's settings: {"format", "key", "info"}; ``key`` holds every setting that decides
                     the pixels, and a writer refuses a folder whose key differs (no silent mixing of runs)
    manifest.jsonl   one JSON object per finished image (file, index, class_index, class_name, classes,
                     class_weights, prompt, seed, ...), appended only once its PNG is in place
    000000.png ...   the images, named by their run index
    views/<name>.json  saved subsets: {"indices": [run indices], "info": {...}}

Crash safety: a PNG is written under a ``.tmp-`` name and moved into place with ``os.replace``; its manifest
line is appended (and flushed) afterwards. So after any interruption the folder holds only whole PNGs, maybe a
PNG without a manifest line, and maybe a torn last manifest line. Readers ignore the strays; a writer
(``SyntheticSet.create`` on an existing folder) removes them, so the resumed run regenerates those images.

Integrity: a listed image counts only if its file exists and ends in PNG's IEND chunk (a cheap check that
catches a missing, empty or truncated file, e.g. a copy cut short); readers warn with the names of the images
that fail it, a writer deletes them so a resumed run makes them again, and a file that still fails to decode
when its pixels are read raises an error naming the file and the set.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genqlib.borders import crop_border, is_border
from genqlib.infra.atomic import TMP_PREFIX, atomic_path

__all__ = ["SyntheticSet", "crop_border", "image_name", "is_border"]

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
VIEWS_DIR = "views"
FORMAT = 1
_IMAGE_NAME = re.compile(r"^\d{6,}\.png$")
_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL's convert("L") uses
PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every whole PNG file: type + CRC


class RunMismatchError(ValueError):
    """The folder holds another run's images; the message lists the settings that differ."""


def image_name(index: int) -> str:
    """File name of run image ``index``."""
    return f"{index:06d}.png"


class SyntheticSet:
    """Records of a synthetic-image folder (or a view of some of them), with lazy, cached pixel loading.

    ``records`` are the manifest objects in order; ``info`` carries whatever a caller attached through
    ``subset`` (filter scores, thresholds); ``run`` is the folder's run.json. Views share the folder and the
    pixel cache; nothing is copied.
    """

    def __init__(
        self,
        folder: str | Path,
        records: list[dict],
        run: dict | None = None,
        info: dict | None = None,
        view: str | None = None,
        _cache: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.records = records
        self.run = run or {}
        self.info = dict(info or {})
        self.view = view
        self._cache = {} if _cache is None else _cache

    # ---------------------------------------------------------------- opening and writing

    @classmethod
    def open(cls, folder: str | Path, view: str | None = None) -> SyntheticSet:
        """Open a folder written by ``generate`` (or one of its saved views) for reading."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"synthetic set folder {str(folder)!r} does not exist or is not a folder")
        if not (folder / MANIFEST).exists() and not (folder / RUN_FILE).exists():
            raise FileNotFoundError(
                f"{str(folder)!r} is not a synthetic set: it has no {MANIFEST} or {RUN_FILE}"
            )
        records, dropped, broken = _read_manifest(folder)
        if dropped or broken:
            named = f": {', '.join(broken[:10])}{' ...' if len(broken) > 10 else ''}" if broken else ""
            warnings.warn(
                f"synthetic set {str(folder)!r}: ignoring {dropped} torn manifest line(s) and "
                f"{len(broken)} missing or truncated image(s){named}; a resumed generate() makes them again",
                stacklevel=2,
            )
        full = cls(folder, records, _read_json(folder / RUN_FILE))
        return full if view is None else full._load_view(view)

    @classmethod
    def create(
        cls, folder: str | Path, key: dict, info: dict | None = None, overwrite: bool = False
    ) -> SyntheticSet:
        """Open ``folder`` for writing a run with settings ``key``: new, resumed (same key) or overwritten.

        Refuses (``RunMismatchError``) a folder holding another run unless ``overwrite``; refuses a file, or a
        non-empty folder that is not a synthetic set. ``overwrite`` acts only on a differing key (the same key
        resumes) and deletes only the set's own files (PNGs, manifest, run.json, views).
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"out={str(folder)!r} is an existing file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        key = json.loads(json.dumps(key))  # compare as stored: tuples become lists
        run = _read_json(folder / RUN_FILE)
        if run is None:
            _check_adoptable(folder, overwrite)
        elif run.get("key") != key:
            if not overwrite:
                raise RunMismatchError(_mismatch_message(folder, run.get("key") or {}, key))
            _remove_own_files(folder)
            run = None
        if run is None:
            payload = {"format": FORMAT, "key": key, "info": _jsonable(info or {}, "info")}
            _atomic_write_text(folder / RUN_FILE, json.dumps(payload, indent=1))
        _repair(folder)
        return cls.open(folder)

    def add(self, image: Image.Image, record: dict) -> dict:
        """Write ``image`` as run image ``record["index"]`` (temp file, then rename), then log its record."""
        name = image_name(int(record["index"]))
        record = {"file": name, **{k: v for k, v in record.items() if k != "file"}}
        tmp = self.folder / f"{TMP_PREFIX}{os.getpid()}-{name}"
        image.save(tmp, format="PNG")
        os.replace(tmp, self.folder / name)
        with open(self.folder / MANIFEST, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        self._cache.pop(name, None)
        self.records.append(record)
        return record

    # ---------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        view = f", view={self.view!r}" if self.view else ""
        return f"SyntheticSet({str(self.folder)!r}, {len(self)} images{view})"

    @property
    def indices(self) -> list[int]:
        """Run indices of the records, in order."""
        return [int(r["index"]) for r in self.records]

    @property
    def paths(self) -> list[Path]:
        """PNG paths of the records, in order."""
        return [self.folder / r["file"] for r in self.records]

    @property
    def labels(self) -> torch.Tensor:
        """Each image's own (prompted) class index, as a LongTensor of shape (N,)."""
        return torch.tensor([int(r["class_index"]) for r in self.records], dtype=torch.long)

    def soft_labels(self, num_classes: int | None = None) -> torch.Tensor:
        """(N, num_classes) class weights (one-hot for single-class prompts, 1/k each for mixup prompts)."""
        if num_classes is None:
            names = self.run.get("key", {}).get("class_names")
            num_classes = (
                len(names) if names else 1 + max((max(_classes(r)) for r in self.records), default=0)
            )
        out = torch.zeros(len(self), num_classes)
        for i, r in enumerate(self.records):
            for c, w in zip(_classes(r), r.get("class_weights", [1.0]), strict=True):
                out[i, int(c)] += float(w)
        return out

    def images(self, size: int | tuple[int, int] | None = None, channels: int | None = None) -> torch.Tensor:
        """Pixels as a float tensor (N, C, H, W) in [0, 1], optionally centre-cropped and resized to ``size``.

        ``channels=1`` converts RGB to gray by BT.601 luminance, ``channels=3`` repeats gray; raw PNGs are
        cached (uint8, shared by views), the returned tensor is new on every call.
        """
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        target = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
        if not self.records:
            c = channels or 1
            h, w = target or (0, 0)
            return torch.zeros(0, c, h, w)
        out = [_convert(self._pixels(r["file"]), target, channels) for r in self.records]
        shapes = {tuple(x.shape) for x in out}
        if len(shapes) > 1:
            raise ValueError(
                f"images differ in shape {sorted(shapes)}; pass size= (and channels=) to stack them"
            )
        return torch.stack(out)

    def _pixels(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            try:
                with Image.open(self.folder / name) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "I", "I;16", "1", "P") else "RGB"))
            except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for a damaged file
                raise OSError(
                    f"cannot read image {name!r} of synthetic set {str(self.folder)!r}: {err}"
                ) from err
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            self._cache[name] = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
        return self._cache[name]

    # ---------------------------------------------------------------- views

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray, **info: Any) -> SyntheticSet:
        """A view of some records (positions in this set, or a boolean mask); ``info`` is merged into ``.info``."""
        positions = _positions(indices, len(self))
        records = [self.records[i] for i in positions]
        return SyntheticSet(self.folder, records, self.run, {**self.info, **info}, None, self._cache)

    def save_view(self, name: str) -> Path:
        """Save this view as ``views/<name>.json`` (run indices + info); reopen with ``open(folder, view=name)``."""
        if not _VIEW_NAME.match(name):
            raise ValueError(
                f"view name {name!r} must be letters, digits, '_', '.', '-' (no path separators)"
            )
        path = self.folder / VIEWS_DIR / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        payload = {"indices": self.indices, "info": _jsonable(self.info, "info")}
        _atomic_write_text(path, json.dumps(payload))
        self.view = name
        return path

    def list_views(self) -> list[str]:
        """Names of the views saved in the folder."""
        return sorted(p.stem for p in (self.folder / VIEWS_DIR).glob("*.json"))

    def _load_view(self, name: str) -> SyntheticSet:
        data = _read_json(self.folder / VIEWS_DIR / f"{name}.json")
        if data is None:
            raise FileNotFoundError(
                f"no view {name!r} in {str(self.folder)!r}; saved views: {self.list_views()}"
            )
        by_index = {int(r["index"]): r for r in self.records}
        missing = [i for i in data["indices"] if i not in by_index]
        if missing:
            raise ValueError(f"view {name!r} names images missing from {str(self.folder)!r}: {missing[:10]}")
        records = [by_index[i] for i in data["indices"]]
        return SyntheticSet(self.folder, records, self.run, data.get("info", {}), name, self._cache)


# -------------------------------------------------------------------- helpers


def _classes(record: dict) -> list[int]:
    return [int(c) for c in record.get("classes", [record["class_index"]])]


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _read_manifest(folder: Path) -> tuple[list[dict], int, list[str]]:
    """Records whose PNG is whole (``_png_is_whole``), one per run index (the last line wins), sorted; the
    count of torn lines dropped; and the files of listed images that are missing or truncated."""
    path = folder / MANIFEST
    if not path.exists():
        return [], 0, []
    by_index: dict[int, dict] = {}
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            by_index[int(record["index"])] = {**record, "file": str(record["file"])}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            dropped += bool(line.strip())
    broken = [r["file"] for r in by_index.values() if not _png_is_whole(folder / r["file"])]
    records = [by_index[i] for i in sorted(by_index) if by_index[i]["file"] not in broken]
    return records, dropped, sorted(broken)


def _png_is_whole(path: Path) -> bool:
    """The file exists and ends in PNG's IEND chunk: reads 8 bytes, not the image."""
    try:
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except OSError:  # missing, or shorter than the trailer
        return False


def _repair(folder: Path) -> None:
    """Make the folder consistent for a writer: drop torn manifest lines and lines of missing or truncated
    images, delete those images, orphan PNGs and temp files, so a resumed run regenerates them."""
    records, dropped, broken = _read_manifest(folder)
    listed = {r["file"] for r in records}
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) or (_IMAGE_NAME.match(p.name) and p.name not in listed):
            p.unlink()
    if dropped or broken:
        _atomic_write_text(folder / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))


def _check_adoptable(folder: Path, overwrite: bool) -> None:
    """A folder without run.json may be written only if empty (or holding only set files and ``overwrite``)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(TMP_PREFIX)]
    if not entries:
        return
    if overwrite and all(_is_own(p) or p.name == VIEWS_DIR for p in entries):
        _remove_own_files(folder)
        return
    raise FileExistsError(
        f"out={str(folder)!r} is not empty and has no {RUN_FILE}: not a synthetic set written by genqlib, "
        "so it is left untouched; choose an empty or new folder"
    )


def _is_own(path: Path) -> bool:
    return (
        path.name in (MANIFEST, RUN_FILE)
        or path.name.startswith(TMP_PREFIX)
        or bool(_IMAGE_NAME.match(path.name))
    )


def _remove_own_files(folder: Path) -> None:
    """Delete the set's own files (images, manifest, run.json, temp files, views); leave anything else."""
    for p in folder.iterdir():
        if _is_own(p):
            p.unlink()
    views = folder / VIEWS_DIR
    if views.is_dir():
        for p in views.glob("*.json"):
            p.unlink()
        if not any(views.iterdir()):
            views.rmdir()


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _mismatch_message(folder: Path, old: dict, new: dict) -> str:
    diffs = [
        f"{k}: folder has {old.get(k)!r}, asked {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return (
        f"out={str(folder)!r} holds another run's images (run.json differs: " + "; ".join(diffs) + "). "
        "Use another out folder, or pass overwrite=True to delete that run's images."
    )


def _positions(indices: Sequence[int] | torch.Tensor | np.ndarray, n: int) -> list[int]:
    """Normalise a list of positions or a boolean mask of length ``n`` to checked positions."""
    arr = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"boolean mask has shape {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr).tolist()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"indices must be integers or a boolean mask, got dtype {arr.dtype}")
    positions = [int(i) for i in arr.reshape(-1)]
    bad = [i for i in positions if not -n <= i < n]
    if bad:
        raise IndexError(f"positions {bad[:10]} out of range for a set of {n} images")
    return [i % n for i in positions]


def _jsonable(value: Any, where: str) -> Any:
    """Tensors, arrays, paths and numpy scalars to JSON types; anything else unknown is an error."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, where) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{where} holds a {type(value).__name__}, which a view cannot save as JSON")


def _convert(x: torch.Tensor, size: tuple[int, int] | None, channels: int | None) -> torch.Tensor:
    """uint8 (C, H, W) -> float [0, 1], channel-converted, then brought to ``size``.

    An image larger than ``size`` by a small even border (at most an eighth of the side, e.g. the mini
    generator's 32x32 against Fashion-MNIST's 28x28) is centre-cropped to ``size``: the exact inverse of the
    zero border its training images got (``web_shift.pad_clean``, ``inversion.to_vae_input``), where resizing
    would shrink and blur every object. Otherwise: centre crop to the aspect ratio, then resize (e.g. Stable
    Diffusion's 512x512 to 224x224)."""
    y = x.float().div(255.0)
    if channels == 1 and y.shape[0] == 3:
        y = (y * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    elif channels == 3 and y.shape[0] == 1:
        y = y.repeat(3, 1, 1)
    if size is None or tuple(y.shape[1:]) == size:
        return y
    if is_border(tuple(y.shape[1:]), size):
        return crop_border(y, size)
    y = _center_crop(y, size[0] / size[1])
    y = F.interpolate(y[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return y.clamp_(0.0, 1.0)


def _center_crop(y: torch.Tensor, aspect: float) -> torch.Tensor:
    """The largest centred crop with height/width = ``aspect``."""
    h, w = y.shape[1:]
    ch, cw = (h, round(h / aspect)) if w * aspect >= h else (round(w * aspect), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return y[:, top : top + ch, left : left + cw]
