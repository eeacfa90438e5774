"""QAT experiments (notebook 05): the PTQ start, GenQ's QAT on filtered synthetic data, LSQ on real data.

Each run is cached under ``cache_dir`` (the notebook uses ``work_dir/qat``) as a JSON row keyed by its
settings and the digests of the teacher's weights, the training images and the evaluation set; the PTQ start
is also stored as a safetensors state dict, and QAT checkpoints go to ``cache_dir/ckpt/<run>`` so an
interrupted run resumes. Same key, same row, nothing recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genqlib.atomic import atomic_path
from genqlib.data import Split, subset_indices
from genqlib.datasets import num_classes, real_split, run_classes
from genqlib.experiments import GENQ_KEEP, filtered_view, tensor_digest
from genqlib.generate import profile_set
from genqlib.metrics import predictions
from genqlib.profiles import Profile
from genqlib.quant import (
    ENGINE,
    QATConfig,
    QuantConfig,
    QuantModel,
    ReconConfig,
    fp_weight,
    qat,
    quantize,
    reconstruct,
    weight_quantizer,
)
from genqlib.store import SyntheticSet
from genqlib.zoo import teacher_tag

MODES = ("ptq_start", "genq", "lsq")
RECON_FIELDS = ("recon_iters", "recon_batch_size", "recon_lr_round")


# ---------------------------------------------------------------- data


def set_targets(synthetic: SyntheticSet, n_classes: int | None = None) -> torch.Tensor:
    """Class indices (N,) for label prompts; (N, K) class weights when any prompt mixes classes."""
    mixed = any(len(r.get("classes", [0])) > 1 for r in synthetic.records)
    return synthetic.soft_labels(n_classes) if mixed else synthetic.labels


def genq_training_set(
    model: nn.Module, teacher: str, profile: Profile, work_dir: str | Path, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, targets, info) of GenQ's filtered synthetic set for ``teacher``: the view ``genq-<teacher>``
    of the profile's set (``filtered_view``: reused while its key matches, else filtered and saved).
    ``n`` takes a class-balanced subset; None keeps the whole filtered set."""
    per_class = None if n is None else math.ceil(n / len(run_classes(profile)) / GENQ_KEEP) + 1
    synthetic = profile_set(profile, work_dir=work_dir, n_per_class=per_class)
    name = f"genq-{teacher_tag(teacher)}"
    view = filtered_view(model, synthetic, profile, name)
    if n is not None:
        view = view.subset(subset_indices(view.labels, n, seed=profile.seed))
    images = view.images(size=profile.image_size, channels=profile.image_channels)
    return (
        images,
        set_targets(view, num_classes(profile)),
        {"folder": str(view.folder), "view": name, "n": len(view)},
    )


def real_training_set(
    n: int, seed: int = 0, profile: str | Profile = "mini"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-balanced real training images and labels of ``profile`` (the "Real Data" the teachers were
    trained on: Fashion-MNIST's private split, or the ImageNet train folder)."""
    split = real_split(profile, "train", n=n, seed=seed)
    return split.images, split.labels


# ---------------------------------------------------------------- settings and digests


@dataclass(frozen=True)
class QATRun:
    """The settings of one row: ``mode`` ptq_start (BRECQ), genq (QAT from it) or lsq (from nearest)."""

    teacher: str
    w_bits: int
    a_bits: int
    mode: str
    source: str
    n_images: int
    epochs: int
    lr: float
    batch_size: int
    loss: str
    temperature: float
    recon_iters: int
    recon_batch_size: int
    recon_lr_round: float
    first_last_bits: int | None = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"QATRun.mode must be one of {MODES}, got {self.mode!r}")

    @property
    def name(self) -> str:
        return f"{teacher_tag(self.teacher)}-w{self.w_bits}a{self.a_bits}-{self.mode}-{self.source}-n{self.n_images}"

    def settings(self) -> dict:
        """The fields that decide this row (lsq ignores the reconstruction, ptq_start the QAT fields)."""
        out = asdict(self)
        if self.mode == "lsq":
            out = {k: v for k, v in out.items() if k not in RECON_FIELDS}
        if self.mode == "ptq_start":
            out = {k: v for k, v in out.items() if k not in ("epochs", "lr", "loss", "temperature")}
        return out

    def quant_config(self) -> QuantConfig:
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last_bits=self.first_last_bits)

    def recon_config(self, method: str = "brecq", progress: bool = False) -> ReconConfig:
        return ReconConfig(
            method=method,
            iters=self.recon_iters if method != "nearest" else 0,
            batch_size=self.recon_batch_size,
            lr_round=self.recon_lr_round,
            seed=self.seed,
            progress=progress,
        )

    def qat_config(self, checkpoint_dir: Path | None = None, progress: bool = False) -> QATConfig:
        return QATConfig(
            mode=self.mode,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            loss=self.loss,
            temperature=self.temperature,
            seed=self.seed,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
        )


def run_key(run: QATRun, model: nn.Module, data: torch.Tensor | Sequence[torch.Tensor], test: Split) -> dict:
    """Everything a cached row depends on: settings, teacher weights, training data, evaluation set."""
    weights = tensor_digest(*model.state_dict().values())
    data = [data] if isinstance(data, torch.Tensor) else list(data)
    return {
        **run.settings(),
        "engine": ENGINE,
        "teacher_weights": weights,
        "data": tensor_digest(*data),
        "eval": tensor_digest(test.images, test.labels),
    }


def _paths(cache_dir: str | Path, run: QATRun, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = Path(cache_dir) / f"{run.name}-{digest}"
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def _read_row(path: Path, key: dict) -> dict | None:
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored["row"] if stored.get("key") == json.loads(json.dumps(key)) else None


def _write_row(path: Path, key: dict, row: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "row": row}, indent=1) + "\n")


# ---------------------------------------------------------------- evaluation


def scorer(model: nn.Module, test: Split) -> Callable[[nn.Module], dict]:
    """``f(qmodel) -> {top1, agreement}`` on ``test``, with the FP model's predictions computed once."""
    fp_pred = predictions(model, test.images)

    def score(qmodel: nn.Module) -> dict:
        pred = predictions(qmodel, test.images)
        return {
            "top1": 100.0 * (pred == test.labels).float().mean().item(),
            "agreement": 100.0 * (pred == fp_pred).float().mean().item(),
        }

    return score


# ---------------------------------------------------------------- runs


def _load_ptq(model: nn.Module, run: QATRun, path: Path) -> QuantModel:
    """A stored PTQ model: quantize again, attach hard AdaRound where the state has V, load the state."""
    state = load_file(str(path))
    qmodel = quantize(model, run.quant_config())
    for name, layer in qmodel.layers().items():
        if f"model.{name}.parametrizations.weight.0.adaround.v" in state:
            weight_quantizer(layer).start_adaround(fp_weight(layer)).harden()
    qmodel.load_state_dict(state)
    return qmodel.requires_grad_(False)


def ptq_start(
    model: nn.Module,
    images: torch.Tensor,
    test: Split,
    run: QATRun,
    cache_dir: str | Path,
    progress: bool = False,
) -> tuple[QuantModel, dict]:
    """The BRECQ-reconstructed model GenQ's QAT starts from, and its row (cached with its state dict)."""
    key = run_key(run, model, images, test)
    row_path, state_path = _paths(cache_dir, run, key)
    row = _read_row(row_path, key)
    if row is not None and state_path.exists():
        return _load_ptq(model, run, state_path), {**row, "from_cache": True}
    start = time.perf_counter()
    qmodel = reconstruct(
        quantize(model, run.quant_config(), example=images[:8]),
        model,
        images,
        run.recon_config("brecq", progress),
    )
    seconds = time.perf_counter() - start
    score = scorer(model, test)(qmodel)
    row = {**run.settings(), **score, "seconds": seconds, "images_per_s": None, "n_eval": len(test)}
    row.update(
        threads=torch.get_num_threads(),  # results are bit-identical only at the same thread count
        epochs=0,
        config=qmodel.describe(),
        curve={"epoch": [0], "top1": [score["top1"]], "agreement": [score["agreement"]]},
    )
    state_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in qmodel.state_dict().items()}, str(state_path))
    _write_row(row_path, key, row)
    return qmodel, {**row, "from_cache": False}


def lsq_start(model: nn.Module, images: torch.Tensor, run: QATRun) -> QuantModel:
    """LSQ's start: nearest rounding, step sizes by the Lp search (activations calibrated on ``images``)."""
    return reconstruct(
        quantize(model, run.quant_config(), example=images[:8]), model, images, run.recon_config("nearest")
    )


def qat_run(
    model: nn.Module,
    start: Callable[[], QuantModel],
    data: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    test: Split,
    run: QATRun,
    cache_dir: str | Path,
    progress: bool = False,
) -> dict:
    """One QAT row (settings, top1, agreement, seconds, images_per_s, per-epoch curve), cached; ``start()``
    builds the starting model only when the row must be computed."""
    key = run_key(run, model, data, test)
    row_path, _ = _paths(cache_dir, run, key)
    row = _read_row(row_path, key)
    if row is not None:
        return {**row, "from_cache": True}
    qmodel = copy.deepcopy(start())
    checkpoints = row_path.parent / "ckpt" / row_path.stem
    result = qat(qmodel, model, data, run.qat_config(checkpoints, progress), scorer(model, test))
    evals = [result.initial_eval] + [h["eval"] for h in result.history]
    row = {
        **run.settings(),
        **result.final_eval,
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "n_eval": len(test),
        "threads": torch.get_num_threads(),
        "config": qmodel.describe(),
        "offset_moved": result.history[-1]["offset_moved"] if run.mode == "genq" and result.history else None,
        "curve": {
            "epoch": list(range(len(evals))),
            "top1": [e["top1"] for e in evals],
            "agreement": [e["agreement"] for e in evals],
            "loss": [None] + [h["loss"] for h in result.history],
        },
    }
    _write_row(row_path, key, row)
    return {**row, "from_cache": False}
