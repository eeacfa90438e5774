"""Experiment plumbing shared by the notebooks: calibration sources by name, class-balanced subsets, and PTQ
runs cached on disk.

A cached result is a JSON file keyed by everything that changes it: the run's settings and the digests of
the teacher's weights, the calibration images and the evaluation set. Same key, same file, no recompute.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genqlib.atomic import atomic_path
from genqlib.baselines import Inversion, bn_inversion, gaussian_noise, pixel_stats
from genqlib.data import Split
from genqlib.datasets import class_names, eval_split, real_images, run_classes
from genqlib.filters import filter_set
from genqlib.generate import profile_set
from genqlib.metrics import evaluate, predictions
from genqlib.profiles import Profile, get_profile
from genqlib.quant import ENGINE, QuantConfig, ReconConfig, quantize, reconstruct
from genqlib.store import SyntheticSet
from genqlib.zoo import TEACHER_DIR, list_teachers, load_teacher, teacher_tag

SOURCES = ("real", "noise", "bn_inversion", "genq_unfiltered", "genq")
# BN-inversion Adam steps per batch, by profile (ZeroQ uses 500). Kept here rather than in profiles.py.
BN_INVERSION_ITERS = {"ci": 20, "mini": 200, "paper": 500, "paper-smoke": 4}
BN_INVERSION_LR = 0.5  # ZeroQ's; on the sigmoid logits it beat 0.05-0.2 on the resnet teacher (200 steps)
GENQ_FILTER = {"energy_drop": 0.3, "second_drop": 0.3}
GENQ_KEEP = 0.49  # (1 - 0.3) * (1 - 0.3): the fraction GENQ_FILTER keeps


# ---------------------------------------------------------------- data


def available_teachers(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(usable, missing): mini-world teachers whose committed weights are missing go to ``missing``."""
    missing = [n for n in names if n in list_teachers() and not (TEACHER_DIR / f"{n}.safetensors").exists()]
    return [n for n in names if n not in missing], missing


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


def synthetic_per_class(n: int, n_classes: int) -> int:
    """Images per class to generate so that the GenQ filter (which keeps GENQ_KEEP) leaves at least ``n``
    over ``n_classes`` classes (the run's classes, ``datasets.run_classes``)."""
    return math.ceil(n / n_classes / GENQ_KEEP) + 1


# ---------------------------------------------------------------- digests and the JSON cache


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names and tensors)."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(value).encode())
    return h.hexdigest()


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cached_json(folder: str | Path, name: str, key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()``'s result, stored as ``folder/<name>-<hash of key>.json``; a later call with the same key
    reads it back instead. The returned dict has ``from_cache`` set accordingly (not stored)."""
    key = json.loads(json.dumps(key))  # compare as stored: tuples become lists
    path = Path(folder) / f"{name}-{_key_digest(key)}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return {**stored["result"], "from_cache": True}
    result = compute()
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1) + "\n")
    return {**result, "from_cache": False}


# ---------------------------------------------------------------- calibration sources


@dataclass
class Calibration:
    """Calibration images of one source, and what is worth printing about how they were made."""

    source: str
    images: torch.Tensor
    info: dict = field(default_factory=dict)


def load_file_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def cached_bn_inversion(
    model: nn.Module,
    teacher: str,
    n: int,
    shape: Sequence[int],
    work_dir: str | Path,
    iters: int,
    seed: int = 0,
) -> Inversion:
    """``bn_inversion`` images, stored under ``work_dir/bn_inversion`` keyed by teacher, n, seed, iters and
    the teacher's weights; a re-run loads them (with the original time and losses)."""
    settings = {"n": n, "shape": list(shape), "iters": iters, "lr": BN_INVERSION_LR, "seed": seed}
    digest = _key_digest({**settings, "weights": model_digest(model)})
    path = (
        Path(work_dir)
        / "bn_inversion"
        / f"{teacher_tag(teacher)}-n{n}-seed{seed}-it{iters}-{digest}.safetensors"
    )
    if path.exists():
        meta = json.loads(load_file_metadata(path)["inversion"])
        return Inversion(load_file(path)["images"], **meta)
    result = bn_inversion(model, n, shape, iters=iters, lr=BN_INVERSION_LR, seed=seed)
    meta = {k: getattr(result, k) for k in ("seconds", "loss_start", "loss_end", "settings")}
    with atomic_path(path) as tmp:
        save_file({"images": result.images.contiguous()}, str(tmp), metadata={"inversion": json.dumps(meta)})
    return result


def synthetic_set(profile: str | Profile, n: int, work_dir: str | Path | None = None) -> SyntheticSet:
    """The profile's label-prompt set with ``synthetic_per_class(n)`` images per class (generated or resumed)."""
    per_class = synthetic_per_class(n, len(run_classes(profile)))
    return profile_set(profile, prompts="label", n_per_class=per_class, work_dir=work_dir)


def genq_view(model: nn.Module, teacher: str, synthetic: SyntheticSet, profile: Profile) -> SyntheticSet:
    """GenQ's filtered view ``genq-<teacher>`` of ``synthetic`` (GENQ_FILTER: energy, then BN sensitivity or
    patch entropy, chosen by ``filter_set``), reused while its key matches."""
    return filtered_view(model, synthetic, profile, f"genq-{teacher_tag(teacher)}")


DEFAULT_FILTER_DROPS = (GENQ_FILTER["energy_drop"], GENQ_FILTER["second_drop"])


def filter_key(
    model: nn.Module, synthetic: SyntheticSet, profile: Profile, drops: tuple[float, float]
) -> dict:
    """What a saved filter view depends on: the teacher's weights, the images exactly as the filter sees them
    (so a change of preprocessing is a change of key), the drop ratios and the seed."""
    images = synthetic.images(size=profile.image_size, channels=profile.image_channels)
    return {
        "weights": model_digest(model),
        "images": tensor_digest(images),
        "drops": list(drops),
        "seed": profile.seed,
    }


def filtered_view(
    model: nn.Module,
    synthetic: SyntheticSet,
    profile: Profile,
    name: str,
    drops: tuple[float, float] = DEFAULT_FILTER_DROPS,
) -> SyntheticSet:
    """The view ``name`` of ``synthetic``'s folder when it was filtered with this key, else ``filter_and_save``;
    the key is computed once for both."""
    key = filter_key(model, synthetic, profile, drops)
    view = _view_with_key(synthetic, name, key)
    return view if view is not None else filter_and_save(model, synthetic, profile, name, drops, key)


def saved_filter_view(
    model: nn.Module,
    synthetic: SyntheticSet,
    profile: Profile,
    name: str,
    drops: tuple[float, float] = DEFAULT_FILTER_DROPS,
) -> SyntheticSet | None:
    """The view ``name`` of ``synthetic``'s folder if ``filter_and_save`` made it with the same key, else None."""
    return _view_with_key(synthetic, name, filter_key(model, synthetic, profile, drops))


def _view_with_key(synthetic: SyntheticSet, name: str, key: dict) -> SyntheticSet | None:
    """The saved view ``name`` when it records ``key``; None (saying why) when it is missing or differs."""
    if name not in synthetic.list_views():
        return None
    view = SyntheticSet.open(synthetic.folder, view=name)
    saved_key = view.info.get("filter_key")
    if saved_key is None:
        print(f"view {name} records no filter key (saved by an older genqlib): filtering again")
    elif saved_key != key:
        print(f"view {name} was filtered from other images, weights or settings: filtering again")
    else:
        return view
    return None


def filter_and_save(
    model: nn.Module,
    synthetic: SyntheticSet,
    profile: Profile,
    name: str,
    drops: tuple[float, float] = DEFAULT_FILTER_DROPS,
    key: dict | None = None,
) -> SyntheticSet:
    """GenQ's filter of ``synthetic`` by ``model`` (energy, then BN sensitivity or patch entropy), saved as
    the view ``name`` of its folder with its ``filter_key`` (``key`` when the caller already has it)."""
    view = filter_set(
        model,
        synthetic,
        size=profile.image_size,
        channels=profile.image_channels,
        seed=profile.seed,
        energy_drop=drops[0],
        second_drop=drops[1],
    )
    view.info["filter_key"] = key or filter_key(model, synthetic, profile, drops)
    view.save_view(name)
    return view


def calibration_images(
    source: str,
    teacher: str,
    model: nn.Module,
    profile: str | Profile,
    n: int,
    work_dir: str | Path | None = None,
    bn_inversion_iters: int | None = None,
) -> Calibration:
    """``n`` calibration images from ``source`` (one of SOURCES) for ``teacher``, seeded by the profile."""
    p = get_profile(profile)
    work_dir = Path(work_dir or p.work_dir)
    shape = (p.image_channels, p.image_size, p.image_size)
    if source == "real":
        return Calibration(source, real_images(p, n, seed=p.seed), {"split": "train"})
    if source == "noise":
        mean, std = pixel_stats(model)
        return Calibration(
            source, gaussian_noise(n, shape, seed=p.seed, mean=mean, std=std), {"clamped": False}
        )
    if source == "bn_inversion":
        iters = BN_INVERSION_ITERS.get(p.name, 500) if bn_inversion_iters is None else bn_inversion_iters
        inv = cached_bn_inversion(model, teacher, n, shape, work_dir, iters, seed=p.seed)
        return Calibration(
            source, inv.images, {"seconds": inv.seconds, "loss": [inv.loss_start, inv.loss_end]}
        )
    if source in ("genq_unfiltered", "genq"):
        synthetic = synthetic_set(p, n, work_dir)
        if source == "genq":
            synthetic = genq_view(model, teacher, synthetic, p)
        chosen = synthetic.subset(first_per_class(synthetic.labels, n))
        images = chosen.images(size=p.image_size, channels=p.image_channels)
        info = {"folder": str(synthetic.folder), "view": synthetic.view}
        return Calibration(source, images, info)
    raise ValueError(f"unknown calibration source {source!r}; choose one of {SOURCES}")


# ---------------------------------------------------------------- PTQ runs


@dataclass(frozen=True)
class PTQRun:
    """The settings of one quantize + reconstruct + evaluate run (the data enter the cache key as digests)."""

    teacher: str
    w_bits: int
    a_bits: int
    method: str
    source: str
    n_calib: int
    iters: int
    batch_size: int
    lr_round: float
    first_last_bits: int | None = 8
    seed: int = 0

    def quant_config(self) -> QuantConfig:
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, first_last_bits=self.first_last_bits)

    def recon_config(self, progress: bool = False) -> ReconConfig:
        return ReconConfig(
            method=self.method,
            iters=self.iters,
            batch_size=self.batch_size,
            lr_round=self.lr_round,
            seed=self.seed,
            progress=progress,
        )


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
    qmodel = quantize(model, run.quant_config(), example=calib[:8])
    reconstruct(qmodel, model, calib, run.recon_config(progress))
    seconds = time.perf_counter() - start
    scores = evaluate(qmodel, test, fp_pred=fp_pred)
    return {
        **asdict(run),
        "top1": scores["top1"],
        "agreement": scores["agreement"],
        "n_eval": scores["n"],
        "seconds": seconds,
        "threads": torch.get_num_threads(),  # results are bit-identical only at the same thread count
        "config": qmodel.describe(),
    }


def ptq_run(
    model: nn.Module,
    calib: torch.Tensor,
    test: Split,
    run: PTQRun,
    cache_dir: str | Path,
    progress: bool = False,
) -> dict:
    """One PTQ result row (settings, top1, agreement with the FP model, seconds), cached under ``cache_dir``."""
    if len(calib) != run.n_calib:
        raise ValueError(f"calib has {len(calib)} images but run.n_calib is {run.n_calib}")
    key = {
        **asdict(run),
        "engine": ENGINE,
        "teacher_weights": model_digest(model),
        "calib": tensor_digest(calib),
        "eval": tensor_digest(test.images, test.labels),
    }
    name = f"{teacher_tag(run.teacher)}-w{run.w_bits}a{run.a_bits}-{run.method}-{run.source}-n{run.n_calib}"

    def compute() -> dict:
        fp_pred = fp_predictions(model, test, key["teacher_weights"], key["eval"])
        return _run_ptq(model, calib, test, run, progress, fp_pred)

    return cached_json(cache_dir, name, key, compute)


def profile_run(
    profile: str | Profile,
    teacher: str,
    bits: tuple[int, int],
    source: str,
    n_calib: int,
    method: str = "brecq",
    first_last_bits: int | None = 8,
) -> PTQRun:
    """A PTQRun with the profile's reconstruction settings (iterations, batch, AdaRound lr, seed)."""
    p = get_profile(profile)
    return PTQRun(
        teacher=teacher,
        w_bits=bits[0],
        a_bits=bits[1],
        method=method,
        source=source,
        n_calib=n_calib,
        iters=0 if method == "nearest" else p.recon_iters,
        batch_size=p.recon_batch_size,
        lr_round=p.recon_lr_round,
        first_last_bits=first_last_bits,
        seed=p.seed,
    )


def filtered_images(
    model: nn.Module, teacher: str, synthetic: SyntheticSet, profile: Profile, n: int
) -> torch.Tensor:
    """The first class-balanced ``n`` images of GenQ's filtered view of ``synthetic`` for ``teacher``."""
    view = genq_view(model, teacher, synthetic, profile)
    chosen = view.subset(first_per_class(view.labels, n))
    return chosen.images(size=profile.image_size, channels=profile.image_channels)


DATA_SCARCE_SOURCES = ("genq_data_free", "genq_data_scarce", "real_shots_only")


def data_scarce_ptq(
    profile: str | Profile,
    teachers: Sequence[str],
    style_set: SyntheticSet,
    shots: torch.Tensor,
    bits: tuple[int, int] = (2, 4),
    n_calib: int | None = None,
    work_dir: str | Path | None = None,
    test: Split | None = None,
) -> dict[str, dict[str, dict]]:
    """Paper §4.2 in PTQ: for each teacher, BRECQ at ``bits`` calibrated on (a) ``n_calib`` filtered
    label-prompt images (data-free GenQ, the same run as notebook 04's ``genq`` row), (b) ``n_calib``
    filtered style-token images (data-scarce GenQ) and (c) the real ``shots`` alone. Teacher -> source ->
    row (cached under ``work_dir/ptq``)."""
    p = get_profile(profile)
    n_calib = n_calib or p.calib_size
    work_dir = Path(work_dir or p.work_dir)
    test = test if test is not None else eval_split(p)
    results: dict[str, dict[str, dict]] = {}
    for teacher in teachers:
        model = load_teacher(teacher)
        calib = {
            "genq_data_free": calibration_images("genq", teacher, model, p, n_calib, work_dir).images,
            "genq_data_scarce": filtered_images(model, teacher, style_set, p, n_calib),
            "real_shots_only": shots,
        }
        results[teacher] = {}
        for source, images in calib.items():
            # data-free GenQ keeps the source name "genq" so that it shares notebook 04's cached run
            run = profile_run(p, teacher, bits, "genq" if source == "genq_data_free" else source, len(images))
            results[teacher][source] = ptq_run(model, images, test, run, work_dir / "ptq")
    return results


# ---------------------------------------------------------------- data-scarce GenQ (style token)


def style_token_path(
    profile: str | Profile, k_shots: int, settings: dict, work_dir: str | Path | None = None
) -> Path:
    """Where the style token learned from ``k_shots`` per class with ``settings`` (steps, lr, batch_size) lives."""
    p = get_profile(profile)
    name = f"{p.name}-k{k_shots}-s{settings['steps']}-lr{settings['lr']:g}-b{settings['batch_size']}-seed{p.seed}"
    return Path(work_dir or p.work_dir) / "tokens" / f"{name}.safetensors"


def generate_style_set(
    profile: str | Profile, pipe, token_file: Path, n_per_class: int, work_dir: str | Path | None = None
) -> SyntheticSet:
    """The style-prompt set generated with ``token_file`` (generated or resumed), with the label set's
    guidance, steps, seed and batch size, in a folder named after the token file."""
    from genqlib.generate import generate

    p = get_profile(profile)
    tag = Path(token_file).stem.removeprefix(p.name + "-")
    folder = (
        Path(work_dir or p.work_dir)
        / "synthetic"
        / f"{p.name}-style-{tag}-g{p.guidance_scale}-s{p.gen_steps}-seed{p.seed}"
    )
    return generate(
        pipe,
        list(run_classes(p)),
        n_per_class,
        out=folder,
        class_names=class_names(p),
        prompts="style",
        token_file=token_file,
        guidance_scale=p.guidance_scale,
        steps=p.gen_steps,
        seed=p.seed,
        batch_size=p.gen_batch_size,
        overwrite=True,
    )


# ---------------------------------------------------------------- printing


def format_table(rows: Sequence[dict], columns: Sequence[str], floats: str = "{:.2f}") -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns; floats formatted with ``floats``."""

    def cell(value: object) -> str:
        return floats.format(value) if isinstance(value, float) else str(value)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)
