"""QAT runs (notebook 05): the PTQ start, GenQ's QAT on filtered synthetic data, LSQ on real data.

Each run is cached in ``genqlib.infra.result_cache`` (the notebook uses ``work_dir/qat``) as a JSON row keyed by the run's
config and the digests of the teacher's weights, the training images and the evaluation set; the PTQ start
is also stored as a safetensors state dict, and QAT checkpoints go to ``<cache_dir>/ckpt/<entry>`` so an
interrupted run resumes. A run nests the library's configs: ``QATRun(quant=QuantConfig(...),
recon=ReconConfig(...), qat=QATConfig(...))``; its result row spells them out flat.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from genqlib.datasets import num_classes
from genqlib.fashion_mnist import Split
from genqlib.infra.machine import machine_record
from genqlib.infra.result_cache import cached_tensors, digest, entry_path, make_key, read_json, write_json
from genqlib.infra.workers import run_all
from genqlib.metrics import predictions
from genqlib.paper.profiles import Profile, get_profile
from genqlib.paper.ptq_runs import fp_predictions
from genqlib.paper.synthetic_pool import genq_view
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


# ---------------------------------------------------------------- data


def set_targets(synthetic: SyntheticSet, n_classes: int | None = None) -> torch.Tensor:
    """Class indices (N,) for label prompts; (N, K) class weights when any prompt mixes classes."""
    mixed = any(len(r.get("classes", [0])) > 1 for r in synthetic.records)
    return synthetic.soft_labels(n_classes) if mixed else synthetic.labels


def genq_training_set(
    model: nn.Module, teacher: str, profile: Profile, work_dir: str | Path, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, targets, info) of GenQ's filtered synthetic set for ``teacher`` (``pool.genq_view``): ``n``
    class-balanced images, or with None every image the filter keeps of the profile's set."""
    view = genq_view(model, teacher, profile, n, work_dir=work_dir)
    images = view.images(size=profile.image_size, channels=profile.image_channels)
    info = {"folder": str(view.folder), "view": view.view or view.info.get("from_view"), "n": len(view)}
    return images, set_targets(view, num_classes(profile)), info


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class QATRun:
    """One row: ``mode`` ptq_start (BRECQ with ``recon``), genq (QAT with ``qat`` from that start) or lsq
    (QAT with ``qat`` from nearest rounding); ``quant`` gives the bit widths of all three."""

    teacher: str
    mode: str
    source: str
    n_images: int
    quant: QuantConfig = field(default_factory=QuantConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    qat: QATConfig = field(default_factory=QATConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"QATRun.mode must be one of {MODES}, got {self.mode!r}")

    @property
    def label(self) -> str:
        q = self.quant
        return (
            f"{teacher_tag(self.teacher)}-w{q.w_bits}a{q.a_bits}-{self.mode}-{self.source}-n{self.n_images}"
        )

    def fields(self) -> dict:
        """The settings of this row as flat columns: lsq has no reconstruction columns, ptq_start of the QAT
        settings only the batch size (which its cache key leaves out); the QAT rows give the recipe they
        trained with (lr, momentum, weight decay at this width, schedule, BatchNorm handling)."""
        q, r, t = self.quant, self.recon, self.qat
        out = {"teacher": self.teacher, "w_bits": q.w_bits, "a_bits": q.a_bits, "mode": self.mode}
        out.update(source=self.source, n_images=self.n_images)
        recipe = self.qat_config().recipe(q.w_bits) if self.mode != "ptq_start" else None
        train = {"epochs": t.epochs, "batch_size": t.batch_size, "loss": t.loss, "temperature": t.temperature}
        if recipe is not None:
            train.update(lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
            train.update(schedule=recipe.schedule, batchnorm=recipe.batchnorm)
        out.update(train if self.mode != "ptq_start" else {"batch_size": t.batch_size})
        if self.mode != "lsq":
            out.update(recon_iters=r.iters, recon_batch_size=r.batch_size, recon_lr_round=r.lr_round)
        return {**out, "first_last_bits": q.first_last_bits, "seed": t.seed}

    def config(self) -> dict:
        """What decides the row: the configs this mode uses (not checkpoint folders or progress bars)."""
        out = {"teacher": self.teacher, "mode": self.mode, "source": self.source, "n_images": self.n_images}
        out.update(quant=asdict(self.quant), engine=ENGINE)
        if self.mode != "lsq":
            out["recon"] = {k: v for k, v in asdict(self.recon).items() if k != "progress"}
        if self.mode != "ptq_start":
            out["qat"] = self.qat_config().key()
        return out

    def qat_config(self, checkpoint_dir: Path | None = None, progress: bool = False) -> QATConfig:
        """``qat`` in this run's mode, writing checkpoints to ``checkpoint_dir``."""
        return replace(self.qat, mode=self.mode, checkpoint_dir=checkpoint_dir, progress=progress)


def profile_qat_run(
    profile: str | Profile,
    teacher: str,
    bits: tuple[int, int],
    mode: str,
    source: str,
    n_images: int,
    first_last_bits: int | None = 8,
    seed: int | None = None,
    **qat_settings: object,
) -> QATRun:
    """A QATRun with the profile's reconstruction settings, epochs, batch size and seed; ``seed`` (default:
    the profile's) seeds both the PTQ start's reconstruction and the training; ``qat_settings`` (epochs, lr,
    batch_size, loss, temperature) override QATConfig's (an lr of None: the mode's recipe, GenQ's 1e-3 or
    LSQ's 0.01). The model keeps its BatchNorms where the recipe trains them (LSQ), else they are folded."""
    p = get_profile(profile)
    seed = p.seed if seed is None else seed
    recon = ReconConfig(
        iters=p.recon_iters, batch_size=p.recon_batch_size, lr_round=p.recon_lr_round, seed=seed
    )
    settings = {"epochs": p.qat_epochs, "batch_size": p.recon_batch_size, "seed": seed, **qat_settings}
    train = QATConfig(mode="lsq" if mode == "lsq" else "genq", **settings)
    fold = train.recipe(bits[0]).batchnorm != "train"
    quant = QuantConfig(w_bits=bits[0], a_bits=bits[1], first_last_bits=first_last_bits, fold_bn=fold)
    return QATRun(teacher, mode, source, n_images, quant, recon, train)


def run_key(run: QATRun, model: nn.Module, data: torch.Tensor | Sequence[torch.Tensor], test: Split) -> dict:
    """Everything a cached row depends on: the run's config, teacher weights, training data, evaluation set."""
    data = [data] if isinstance(data, torch.Tensor) else list(data)
    curve = curve_split(test)
    return make_key(
        run.config(),
        teacher_weights=digest(model),
        data=digest(*data),
        eval=digest(test.images, test.labels),
        curve_eval=digest(curve.images, curve.labels),
    )


# ---------------------------------------------------------------- evaluation

# Test images each point of a per-epoch QAT curve is scored on (a fixed class-balanced subset); a row's own
# top-1 and agreement are scored on the whole test split. The curve shows the trend of training; the row's
# number is the one tables compare, so only it pays for every test image.
CURVE_EVAL = 2000


def curve_split(test: Split) -> Split:
    """The fixed subset of ``test`` (``CURVE_EVAL`` images, class-balanced, seed 0) the curves are scored on;
    ``test`` itself when it is no bigger."""
    return test if len(test) <= CURVE_EVAL else test.subset(CURVE_EVAL, seed=0)


def scorer(model: nn.Module, test: Split) -> Callable[[nn.Module], dict]:
    """``f(qmodel) -> {top1, agreement}`` on ``test``, with the FP model's predictions computed once per
    process (``ptq_runs.fp_predictions``: a QAT unit's three rows and every epoch share them)."""
    fp_pred = fp_predictions(model, test, digest(model), digest(test.images, test.labels))

    def score(qmodel: nn.Module) -> dict:
        pred = predictions(qmodel, test.images)
        return {
            "top1": 100.0 * (pred == test.labels).float().mean().item(),
            "agreement": 100.0 * (pred == fp_pred).float().mean().item(),
        }

    return score


# ---------------------------------------------------------------- runs


def _load_ptq(model: nn.Module, run: QATRun, state: dict[str, torch.Tensor]) -> QuantModel:
    """A stored PTQ model: quantize again, attach hard AdaRound where the state has V, load the state."""
    qmodel = quantize(model, run.quant)
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
    built: list[QuantModel] = []

    def compute() -> tuple[dict[str, torch.Tensor], dict]:
        start = time.perf_counter()
        qmodel = quantize(model, run.quant, example=images[:8])
        reconstruct(qmodel, model, images, replace(run.recon, method="brecq", progress=progress))
        seconds = time.perf_counter() - start
        score, curve = scorer(model, test)(qmodel), curve_split(test)
        row = {**run.fields(), **score, "seconds": seconds, "images_per_s": None, "n_eval": len(test)}
        row.update(
            threads=torch.get_num_threads(),  # results are bit-identical only at the same thread count
            epochs=0,
            config=qmodel.describe(),
            curve=_curve([scorer(model, curve)(qmodel)], len(curve)),
            machine=machine_record(),
        )
        built.append(qmodel)
        return qmodel.state_dict(), row

    key = run_key(run, model, images, test)
    state, row, from_cache = cached_tensors(cache_dir, run.label, key, compute)
    qmodel = _load_ptq(model, run, state) if from_cache else built[0]
    return qmodel, {**row, "from_cache": from_cache}


def _curve(evals: Sequence[dict], n_eval: int) -> dict:
    """A per-epoch curve (epoch 0 = the start) of ``evals`` scored on ``n_eval`` test images."""
    return {
        "epoch": list(range(len(evals))),
        "top1": [e["top1"] for e in evals],
        "agreement": [e["agreement"] for e in evals],
        "n_eval": n_eval,
    }


def lsq_start(model: nn.Module, images: torch.Tensor, run: QATRun) -> QuantModel:
    """LSQ's start: nearest rounding, step sizes by the Lp search (activations calibrated on ``images``), the
    BatchNorms kept when ``run.quant.fold_bn`` is False (``profile_qat_run`` sets it for LSQ's recipe)."""
    nearest = replace(run.recon, method="nearest", iters=0, progress=False)
    return reconstruct(quantize(model, run.quant, example=images[:8]), model, images, nearest)


def qat_run(
    model: nn.Module,
    start: Callable[[], QuantModel],
    data: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    test: Split,
    run: QATRun,
    cache_dir: str | Path,
    progress: bool = False,
) -> dict:
    """One QAT row (settings, top1 and agreement on all of ``test``, seconds, images_per_s, the per-epoch curve
    on ``curve_split(test)``, machine), cached;
    ``start()`` builds the starting model only when the row must be computed; an interrupted run resumes
    from its checkpoint."""
    key = run_key(run, model, data, test)
    path = entry_path(cache_dir, run.label, key)
    row = read_json(path, key)
    if row is not None:
        return {**row, "from_cache": True}
    qmodel = copy.deepcopy(start())
    checkpoints = path.parent / "ckpt" / path.stem
    curve_test = curve_split(test)
    result = qat(qmodel, model, data, run.qat_config(checkpoints, progress), scorer(model, curve_test))
    evals = [result.initial_eval] + [h["eval"] for h in result.history]
    row = {
        **run.fields(),
        **scorer(model, test)(qmodel),
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "n_eval": len(test),
        "threads": torch.get_num_threads(),
        "config": qmodel.describe(),
        "offset_moved": result.history[-1]["offset_moved"] if run.mode == "genq" and result.history else None,
        "curve": {
            **_curve(evals, len(curve_test)),
            "loss": [None] + [h["loss"] for h in result.history],
        },
        "machine": machine_record(),
    }
    write_json(path, key, row)
    return {**row, "from_cache": False}


# ---------------------------------------------------------------- grids


@dataclass(frozen=True)
class QATUnit:
    """The three rows of one teacher, bit width and seed: the PTQ start on ``synthetic``, GenQ's QAT from it
    on ``synthetic`` and LSQ from nearest rounding on ``real`` (each data an (images, targets) pair)."""

    model: nn.Module
    synthetic: tuple[torch.Tensor, torch.Tensor]
    real: tuple[torch.Tensor, torch.Tensor]
    start: QATRun
    genq: QATRun
    lsq: QATRun


def unit_rows(unit: QATUnit, test: Split, cache_dir: str | Path, progress: bool = False) -> list[dict]:
    """The unit's three rows (PTQ start, GenQ's QAT, LSQ), each cached."""
    model, images = unit.model, unit.synthetic[0]
    start, start_row = ptq_start(model, images, test, unit.start, cache_dir)
    genq = qat_run(model, lambda: start, unit.synthetic, test, unit.genq, cache_dir, progress)

    def nearest() -> QuantModel:
        return lsq_start(model, unit.real[0], unit.lsq)

    return [start_row, genq, qat_run(model, nearest, unit.real, test, unit.lsq, cache_dir, progress)]


def _is_cached(unit: QATUnit, test: Split, cache_dir: str | Path) -> bool:
    """Whether all three rows of ``unit`` are in the cache."""
    start_key = run_key(unit.start, unit.model, unit.synthetic[0], test)
    if not entry_path(cache_dir, unit.start.label, start_key, ".safetensors").exists():
        return False
    for run, data in ((unit.genq, unit.synthetic), (unit.lsq, unit.real)):
        key = run_key(run, unit.model, data, test)
        if read_json(entry_path(cache_dir, run.label, key), key) is None:
            return False
    return True


def qat_grid(
    units: Sequence[QATUnit], test: Split, cache_dir: str | Path, jobs: int | None = None
) -> list[dict]:
    """Every unit's three rows, in order. Units missing from the cache are computed first by
    ``workers.run_all`` (``jobs`` one-thread worker processes, default one per CPU; ``jobs=1``: here)."""
    missing = [u for u in units if not _is_cached(u, test, cache_dir)]
    run_all(unit_rows, [(u, test, str(cache_dir)) for u in missing], jobs, "qat units")
    fresh = {id(u) for u in missing}
    return [{**row, "from_cache": id(u) not in fresh} for u in units for row in unit_rows(u, test, cache_dir)]
