"""PTQ runs (notebooks 03, 04, 06): quantize + reconstruct + evaluate one teacher on one calibration set,
cached in ``genqlib.infra.result_cache`` under the run's config and the digests of the teacher, the calibration images and
the evaluation set. A run nests the library's own configs: ``PTQRun(quant=QuantConfig(...),
recon=ReconConfig(...))``; its result row spells them out flat for tables and metrics files.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from genqlib.fashion_mnist import Split
from genqlib.infra.machine import machine_record
from genqlib.infra.result_cache import cached_json, digest, entry_path, make_key, read_json
from genqlib.infra.workers import run_all
from genqlib.metrics import evaluate, predictions
from genqlib.paper.profiles import Profile, get_profile
from genqlib.quant import ENGINE, QuantConfig, ReconConfig, quantize, reconstruct, reference_for
from genqlib.zoo import teacher_tag

# the columns of a result row that make it one run (``PTQRun.fields``): the explorer tells runs apart by them
RUN_FIELDS = (
    "teacher",
    "w_bits",
    "a_bits",
    "method",
    "source",
    "n_calib",
    "iters",
    "batch_size",
    "lr_round",
    "first_last_bits",
    "seed",
)


@dataclass(frozen=True)
class PTQRun:
    """One quantize + reconstruct + evaluate run: the teacher, the calibration source and size, and the
    library's configs (the calibration images enter the cache key as a digest)."""

    teacher: str
    source: str
    n_calib: int
    quant: QuantConfig = field(default_factory=QuantConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)

    @property
    def label(self) -> str:
        """The run's file name stem in the cache (its identity is the key's hash)."""
        q, r = self.quant, self.recon
        return f"{teacher_tag(self.teacher)}-w{q.w_bits}a{q.a_bits}-{r.method}-{self.source}-n{self.n_calib}"

    def fields(self) -> dict:
        """The settings as the flat columns of a result row (``RUN_FIELDS``, in that order)."""
        q, r = self.quant, self.recon
        values = (
            self.teacher,
            q.w_bits,
            q.a_bits,
            r.method,
            self.source,
            self.n_calib,
            r.iters,
            r.batch_size,
            r.lr_round,
            q.first_last_bits,
            r.seed,
        )
        return dict(zip(RUN_FIELDS, values, strict=True))

    def config(self) -> dict:
        """What decides the result (not whether a progress bar shows)."""
        recon = {k: v for k, v in asdict(self.recon).items() if k != "progress"}
        return {
            "teacher": self.teacher,
            "source": self.source,
            "n_calib": self.n_calib,
            "quant": asdict(self.quant),
            "recon": recon,
            "engine": ENGINE,
        }


def profile_run(
    profile: str | Profile,
    teacher: str,
    bits: tuple[int, int],
    source: str,
    n_calib: int,
    method: str = "brecq",
    first_last_bits: int | None = 8,
    iters: int | None = None,
    seed: int | None = None,
) -> PTQRun:
    """A PTQRun with the profile's reconstruction settings (iterations, batch, AdaRound lr, seed), ``iters``
    and ``seed`` overriding the profile's; ``nearest`` rounding runs no iterations."""
    p = get_profile(profile)
    recon = ReconConfig(
        method=method,
        iters=0 if method == "nearest" else (p.recon_iters if iters is None else iters),
        batch_size=p.recon_batch_size,
        lr_round=p.recon_lr_round,
        seed=p.seed if seed is None else seed,
    )
    # each method quantizes with its reference's conventions (activation grid, edges, residual)
    quant = QuantConfig(
        w_bits=bits[0], a_bits=bits[1], first_last_bits=first_last_bits, reference=reference_for(method)
    )
    return PTQRun(teacher, source, n_calib, quant, recon)


_FP_PREDICTIONS: dict[tuple[str, str], torch.Tensor] = {}  # (teacher weights, eval set) digests -> classes


def fp_predictions(model: nn.Module, test: Split, weights_digest: str, eval_digest: str) -> torch.Tensor:
    """The FP model's classes on ``test``, computed once per process for a (weights, eval set) pair: every
    PTQ point of a teacher compares against the same predictions."""
    key = (weights_digest, eval_digest)
    if key not in _FP_PREDICTIONS:
        _FP_PREDICTIONS[key] = predictions(model, test.images)
    return _FP_PREDICTIONS[key]


def _run_ptq(
    model: nn.Module, calib: torch.Tensor, test: Split, run: PTQRun, progress: bool, fp_pred: torch.Tensor
) -> dict:
    """Quantize, reconstruct and evaluate once; ``seconds`` is the quantize + reconstruct wall time."""
    start = time.perf_counter()
    qmodel = quantize(model, run.quant, example=calib[:8])
    reconstruct(qmodel, model, calib, replace(run.recon, progress=progress))
    seconds = time.perf_counter() - start
    scores = evaluate(qmodel, test, fp_pred=fp_pred)
    return {
        **run.fields(),
        "top1": scores["top1"],
        "agreement": scores["agreement"],
        "n_eval": scores["n"],
        "seconds": seconds,
        "threads": torch.get_num_threads(),  # results are bit-identical only at the same thread count
        "config": qmodel.describe(),
        "machine": machine_record(),
    }


def _cache_key(model: nn.Module, calib: torch.Tensor, test: Split, run: PTQRun) -> tuple[dict, dict]:
    """(input digests, cache key) of one run."""
    if len(calib) != run.n_calib:
        raise ValueError(f"calib has {len(calib)} images but run.n_calib is {run.n_calib}")
    inputs = {
        "teacher_weights": digest(model),
        "calib": digest(calib),
        "eval": digest(test.images, test.labels),
    }
    return inputs, make_key(run.config(), **inputs)


def ptq_run(
    model: nn.Module,
    calib: torch.Tensor,
    test: Split,
    run: PTQRun,
    cache_dir: str | Path,
    progress: bool = False,
) -> dict:
    """One PTQ result row (settings, top1, agreement with the FP model, seconds, machine), cached under
    ``cache_dir``."""
    inputs, key = _cache_key(model, calib, test, run)

    def compute() -> dict:
        fp_pred = fp_predictions(model, test, inputs["teacher_weights"], inputs["eval"])
        return _run_ptq(model, calib, test, run, progress, fp_pred)

    return cached_json(cache_dir, run.label, key, compute)


@dataclass(frozen=True)
class PTQTask:
    """One run of a grid: the FP model, its calibration images and the run's settings."""

    model: nn.Module
    calib: torch.Tensor
    run: PTQRun


def _fill(task: PTQTask, test: Split, cache_dir: str) -> None:
    """Compute one run into the cache (in a worker process)."""
    ptq_run(task.model, task.calib, test, task.run, cache_dir)


def ptq_runs(
    tasks: Sequence[PTQTask],
    test: Split,
    cache_dir: str | Path,
    jobs: int | None = None,
    desc: str = "ptq runs",
) -> list[dict]:
    """``ptq_run`` of every task, in order. Runs missing from the cache are computed first by
    ``workers.run_all``: ``jobs`` worker processes of one thread each (default: one per CPU), so their rows
    record ``threads`` 1 and repeat bit for bit whatever ``jobs`` is; with ``jobs=1`` they run here."""
    entries = [_entry(task, test, cache_dir) for task in tasks]
    missing = {}  # cache file -> the first task filed there
    for task, (path, key) in zip(tasks, entries, strict=True):
        if read_json(path, key) is None:
            missing.setdefault(path, task)
    run_all(_fill, [(task, test, str(cache_dir)) for task in missing.values()], jobs, desc)
    fresh = {id(task) for task in missing.values()}
    return [
        {**read_json(path, key), "from_cache": id(task) not in fresh}
        for task, (path, key) in zip(tasks, entries, strict=True)
    ]


def _entry(task: PTQTask, test: Split, cache_dir: str | Path) -> tuple[Path, dict]:
    """(cache file, key) of a task's run (``make_key`` already gives the key as stored)."""
    _, key = _cache_key(task.model, task.calib, test, task.run)
    return entry_path(cache_dir, task.run.label, key), key


def same_settings(row: dict, run: PTQRun) -> bool:
    """Whether a result row was made with ``run``'s calibration size and reconstruction settings (any
    teacher, bits, method, source and seed; ``nearest`` rows, which run no iterations, included)."""
    want = run.fields()
    shared = ("n_calib", "batch_size", "lr_round", "first_last_bits")
    return all(row.get(k) == want[k] for k in shared) and row.get("iters") in (0, want["iters"])


def seed_mean(rows: Sequence[dict]) -> dict:
    """One setting's result rows (one per reconstruction seed) as one row: mean ``top1`` and ``agreement``,
    ``top1_std`` (sample std; 0.0 for a single seed) and ``seeds`` (how many)."""
    top1 = [r["top1"] for r in rows]
    return {
        **rows[0],
        "seeds": len(rows),
        "top1": statistics.mean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "agreement": statistics.mean(r["agreement"] for r in rows),
    }
