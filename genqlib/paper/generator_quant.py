"""Notebook 06's generator-quantization comparison: the FP generator against plain-PTQ and QuEST generators.

GenQ's question about QuEST: can the generator that makes the synthetic calibration images itself run at low
bit width without hurting the images it makes? Each generator makes a set from the same prompts and seeds; the
set is judged by what it does as calibration data: class fidelity and BN distance under a teacher, and the
teacher's downstream PTQ accuracy when calibrated on the set's GenQ-filtered images.

``python -m genqlib.paper.generator_quant --profile mini --teacher mobilenet --widths 4,8 4,4 ...`` runs it from
the command line: one row per generator printed, ``--out`` written as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genqlib.infra.machine import machine_record
from genqlib.infra.workers import run_all
from genqlib.paper.profiles import REPO_ROOT, get_profile, stage_defaults
from genqlib.quant import QuantModel
from genqlib.quest.config import DEVIATIONS, METHODS, QUEST_RECON_ITERS, GenQuantConfig
from genqlib.quest.generator import build_generator, calibrated_unet, model_bits
from genqlib.quest.trajectories import trajectory_inputs

SIMULATED = "fake quantization in float32 on the CPU: no low-bit kernel, times are not a speed-up"

# quest's AdaRound reconstruction at a profile. Deviations kept for cost, named in the record: this many
# iterations per block per finetuning step the profile allows (``iters``), at most the reference's 20,000
# (mini, iters 100: 200 per block), on at most RECON_ROWS of the calibration rows (the reference reconstructs
# on all of them).
RECON_PER_STEP, RECON_ROWS = 2, 256

# The columns a generator-quantization table shows (the notebook, the bench command).
COLUMNS = [
    "method",
    "w_bits",
    "a_bits",
    "class_fidelity",
    "bn_distance",
    "downstream_top1",
    "seconds_per_1000",
    "build_seconds",
    "unet_megabytes",
]


def gq_settings(profile, **overrides) -> dict:
    """The profile's generator-quantization defaults (``paper.settings.GeneratorQuant``) with ``overrides`` (None
    values ignored)."""
    settings = stage_defaults(profile, "generator_quant")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["widths"] = [tuple(w) for w in settings["widths"]]
    return settings


def bench_record(profile) -> dict | None:
    """The committed record of ``python -m genqlib.paper.generator_quant --profile <name> --out figures/bench/quest_<name>.json``
    (None when there is none): notebook 06 shows it where the profile leaves the comparison out of its run."""
    path = REPO_ROOT / "figures" / "bench" / f"quest_{getattr(profile, 'name', profile)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def generator_quant(
    pipe,
    model: nn.Module,
    teacher: str,
    profile,
    test,
    work_dir: str | Path,
    bits: tuple[int, int],
    method: str,
    iters: int,
    widths: Sequence[tuple[int, int]] | None = None,
    n_per_class: int | None = None,
    calib_per_class: int | None = None,
    calib_rows: int | None = None,
    finetune_iters: int | None = None,
    methods: Sequence[str] = METHODS,
    text_encoder: bool = False,
    jobs: int | None = None,
) -> dict:
    """FP, plain PTQ and QuEST generators at each width: sets of ``n_per_class`` images each, their class
    fidelity and BN distance under ``teacher``, sampling seconds, UNet size, and the downstream PTQ top-1 of
    ``teacher`` at ``bits`` (``method``, ``iters`` per block) calibrated on each set's GenQ-filtered images.
    The profile's ``downstream_iters`` and ``downstream_eval`` (``paper.settings.GeneratorQuant``), where set,
    replace ``iters`` and evaluate on a class-balanced subset of ``test``; the result's ``downstream`` records
    what was used.

    Each width's generators (and the FP one) are built, sampled and judged in a one-thread worker process
    (``genqlib.infra.workers.run_all``, ``jobs`` of them), as notebook 04's PTQ runs are: the rows do not depend on
    the machine's core count, and two widths run at once. Built generators, sets and PTQ runs are cached under
    ``work_dir``, so a stopped comparison resumes."""
    overrides = {"calib_per_class": calib_per_class, "calib_rows": calib_rows, "iters": finetune_iters}
    s = gq_settings(profile, widths=widths, n_per_class=n_per_class, **overrides)
    judge = _Judge.of(s, model, teacher, profile, bits, method, iters, test, Path(work_dir))
    groups = [*s["widths"], None]  # the quantized generators of each width, then the FP one (quickest) last
    rows, samples, machines, calib_used = [], {}, [], 0
    with tempfile.TemporaryDirectory(prefix="genq_gq_") as tmp:
        outs = [Path(tmp) / f"{i}.pt" for i in range(len(groups))]
        calls = [
            (pipe, judge, s, g, tuple(methods), text_encoder, out)
            for g, out in zip(groups, outs, strict=True)
        ]
        run_all(_group_rows, calls, jobs, desc="generators")
        for out in [outs[-1], *outs[:-1]]:  # FP first in the table
            saved = torch.load(out, weights_only=True)
            rows += saved["rows"]
            samples.update(saved["samples"])
            machines.append(saved["machine"])
            calib_used = saved["calib_rows"] or calib_used
    threads = sorted({m["threads"] for m in machines})
    return {
        "teacher": teacher,
        "downstream": judge.record(),
        "settings": {k: [list(w) for w in v] if k == "widths" else v for k, v in s.items()},
        "gen_steps": profile.gen_steps,
        "calib_rows": calib_used,
        "threads": threads[0] if len(threads) == 1 else threads,
        "machine": machines[-1],  # a worker's: CPU kind, torch and its one thread
        "simulated": SIMULATED,
        "quest": {
            "reference": "hatchetProject/QuEST (txt2img.py, qdiff/post_layer_recon_sd.py)",
            "recon_iters": min(QUEST_RECON_ITERS, RECON_PER_STEP * s["iters"]),
            "recon_rows": RECON_ROWS,
            "max_steps": s["iters"],
            "deviations": list(DEVIATIONS),
        },
        "rows": rows,
        "samples": samples,
    }


def _group_rows(pipe, judge: _Judge, s: dict, width, methods: tuple, text_encoder: bool, out: Path) -> None:
    """Build, sample and judge the generators of one width (``None``: the FP generator) and save their rows,
    sample images and this process's machine record (threads, CPU kind, torch) to ``out`` (a worker's result)."""
    from genqlib.datasets import class_names, run_classes

    profile = judge.profile
    classes, names = list(run_classes(profile)), class_names(profile)
    calib = _calibration(pipe, profile, classes, names, s) if width is not None else ()
    builder = _Builder(pipe, calib, [f"a photo of a {n}" for n in names], judge.work_dir / "gen_quant")
    rows, samples = [], {}
    for m, w, cfg in _generators(s, methods, text_encoder, profile.seed, width):
        gpipe, built = builder.fp() if cfg is None else builder.build(cfg)
        synthetic, seconds = _sample(
            gpipe, profile, classes, names, s["n_per_class"], judge.work_dir / "gen_quant"
        )
        source = _safe(f"gq-{m}" + (f"-W{w[0]}A{w[1]}" if w else ""))
        row, samples[source] = judge.row(synthetic, source, len(classes))
        rows.append(_row(m, w, gpipe, synthetic, row, seconds, built))
    calib_rows = len(calib[0]) if calib else None
    torch.save({"rows": rows, "samples": samples, "machine": machine_record(), "calib_rows": calib_rows}, out)


def _calibration(pipe, profile, classes: list[int], names: Sequence[str], s: dict) -> tuple:
    """The data-free calibration rows every quantized generator of the comparison shares."""
    return trajectory_inputs(
        pipe,
        classes,
        s["calib_per_class"],
        steps=profile.gen_steps,
        guidance_scale=profile.guidance_scale,
        seed=profile.seed,
        rows=s["calib_rows"],
        class_names=names,
        batch_size=profile.gen_batch_size,
    )


def _generators(
    s: dict, methods: Sequence[str], text_encoder: bool, seed: int, width: tuple[int, int] | None
) -> Iterator[tuple[str, tuple[int, int] | None, GenQuantConfig | None]]:
    """(method, (w, a) or None, config or None) of each generator of one width (``None``: the FP one)."""
    if width is None:
        yield "fp", None, None
        return
    w, a = width
    for m in methods:
        cfg = GenQuantConfig(
            w_bits=w,
            a_bits=a,
            method=m,
            text_encoder=text_encoder,
            calib_per_class=s["calib_per_class"],
            calib_rows=s["calib_rows"],
            max_steps=s["iters"],
            quest_recon_iters=min(QUEST_RECON_ITERS, RECON_PER_STEP * s["iters"]),
            quest_recon_rows=RECON_ROWS,
            seed=seed,
        )
        yield m, (w, a), cfg


class _Builder:
    """Builds the comparison's generators (cached under ``cache_dir``). ptq and quest at one width start from
    one quantize + Lp calibration, computed once and copied; each build is charged that start's full time."""

    def __init__(self, pipe, calib: tuple, prompts: list[str], cache_dir: Path) -> None:
        self.pipe, self.calib, self.prompts, self.cache_dir = pipe, calib, prompts, cache_dir
        self.starts: dict[tuple[int, int], tuple[QuantModel, float]] = {}

    def fp(self) -> tuple:
        """The FP pipeline and its facts."""
        return self.pipe, {"build_seconds": 0.0, "size": model_bits(self.pipe.unet), "finetune_log": None}

    def build(self, cfg: GenQuantConfig) -> tuple:
        """The quantized pipeline of ``cfg`` and its facts: build seconds, UNet size, last finetuning losses."""
        reused: list[float] = []
        start = self._start(cfg, reused) if cfg.method == "ptq" else None  # quest builds its own start
        gpipe, gen, seconds = build_generator(self.pipe, cfg, self.calib, self.prompts, self.cache_dir, start)
        log = {k: v["losses"][-1:] for k, v in (getattr(gen.unet, "finetune_log", None) or {}).items()}
        facts = {"build_seconds": seconds + sum(reused), "size": model_bits(gen.unet), "finetune_log": log}
        return gpipe, facts

    def _start(self, cfg: GenQuantConfig, reused: list[float]) -> Callable[[], QuantModel]:
        """A ``build_generator`` base: a copy of the calibrated UNet at ``cfg``'s widths; when an earlier build
        computed it, its seconds go to ``reused``."""

        def make() -> QuantModel:
            key = (cfg.w_bits, cfg.a_bits)
            if key in self.starts:
                reused.append(self.starts[key][1])
            else:
                start = time.perf_counter()
                unet = calibrated_unet(self.pipe.unet, self.calib, cfg)
                self.starts[key] = (unet, time.perf_counter() - start)
            return copy.deepcopy(self.starts[key][0])

        return make


def _sample(gpipe, profile, classes: list[int], names: Sequence[str], n_per_class: int, root: Path) -> tuple:
    """(the generator's set of ``n_per_class`` images per class, the seconds it took to sample): the set
    resumes from ``root/sets``, and a resumed set's seconds are the ones recorded when it was made."""
    from genqlib.generate import generate, pipeline_id
    from genqlib.store import MANIFEST, SyntheticSet

    folder = root / "sets" / _safe(f"{profile.name}-{pipeline_id(gpipe)}")
    before = len(SyntheticSet.open(folder)) if (folder / MANIFEST).is_file() else 0
    start = time.perf_counter()
    synthetic = generate(
        gpipe,
        classes,
        n_per_class,
        out=folder,
        guidance_scale=profile.guidance_scale,
        steps=profile.gen_steps,
        seed=profile.seed,
        batch_size=profile.gen_batch_size,
        class_names=names,
        progress=False,
    )
    seconds = _timing(folder, len(synthetic) - before, time.perf_counter() - start) * len(synthetic)
    return synthetic, seconds


@dataclass(frozen=True)
class _Judge:
    """What a set does as calibration data for ``model`` (``teacher``): the downstream PTQ settings."""

    model: nn.Module
    teacher: str
    profile: object
    bits: tuple[int, int]
    method: str
    iters: int
    test: object
    work_dir: Path

    @classmethod
    def of(
        cls, s: dict, model: nn.Module, teacher: str, profile, bits, method, iters, test, work_dir
    ) -> _Judge:
        """The judge of the comparison settings ``s``: their ``downstream_iters`` replace ``iters`` and their
        ``downstream_eval`` takes a class-balanced subset of ``test``, where set."""
        iters = iters if s["downstream_iters"] is None else s["downstream_iters"]
        if s["downstream_eval"] is not None:
            test = test.subset(min(s["downstream_eval"], len(test)), seed=profile.seed)
        return cls(model, teacher, profile, tuple(bits), method, iters, test, work_dir)

    def record(self) -> dict:
        """The downstream PTQ's settings as the result reports them."""
        w, a = self.bits
        return {
            "w_bits": w,
            "a_bits": a,
            "method": self.method,
            "iters": self.iters,
            "n_eval": len(self.test),
        }

    def row(self, synthetic, source: str, n_classes: int) -> tuple[dict, torch.Tensor]:
        """(class fidelity, BN distance and downstream PTQ of ``synthetic``; one image per class)."""
        from genqlib.filters import batchnorm_layers
        from genqlib.metrics import class_fidelity, set_bn_distance
        from genqlib.paper.synthetic_pool import first_per_class

        p = self.profile
        images = synthetic.images(size=p.image_size, channels=p.image_channels)
        fidelity = class_fidelity(self.model, images, synthetic.labels)["class_fidelity"]
        bn = None
        if batchnorm_layers(self.model):
            bn = set_bn_distance(self.model, images, min(100, len(images)), seed=p.seed)["mean"]
        ptq, n_calib = self.downstream(synthetic, source)
        facts = {"class_fidelity": fidelity, "bn_distance": bn, "n_calib": n_calib, "ptq": ptq}
        return facts, images[first_per_class(synthetic.labels, n_classes)]

    def downstream(self, synthetic, source: str) -> tuple[dict, int]:
        """(the teacher's PTQ calibrated on the GenQ-filtered images of ``synthetic``, how many images)."""
        from genqlib.paper.ptq_runs import profile_run, ptq_run
        from genqlib.paper.synthetic_pool import genq_view

        p = self.profile
        view = genq_view(self.model, self.teacher, p, pool=synthetic)
        images = view.images(size=p.image_size, channels=p.image_channels)
        run = profile_run(p, self.teacher, self.bits, source, len(images), self.method, iters=self.iters)
        return ptq_run(self.model, images, self.test, run, self.work_dir / "ptq"), len(images)


def _row(m: str, width, gpipe, synthetic, judged: dict, seconds: float, built: dict) -> dict:
    """One generator's row of the comparison table."""
    from genqlib.generate import pipeline_id

    return {
        "method": m,
        "w_bits": width[0] if width else 32,
        "a_bits": width[1] if width else 32,
        "generator": pipeline_id(gpipe),
        "n_images": len(synthetic),
        "class_fidelity": judged["class_fidelity"],
        "bn_distance": judged["bn_distance"],
        "n_calib": judged["n_calib"],
        "downstream_top1": judged["ptq"]["top1"],
        "downstream_agreement": judged["ptq"]["agreement"],
        "seconds": seconds,
        "seconds_per_1000": seconds / len(synthetic) * 1000,
        "build_seconds": built["build_seconds"],
        "unet_params": built["size"]["params"],
        "unet_megabytes": built["size"]["megabytes"],
        "finetune_final_loss": built["finetune_log"],
    }


def _timing(folder: Path, n_new: int, seconds: float) -> float:
    """Seconds per image of the set in ``folder``: measured now when images were made, else as recorded."""
    path = folder.parent / f"{folder.name}.timing.json"
    if n_new > 0:
        path.write_text(json.dumps({"seconds_per_image": seconds / n_new, "n": n_new}))
        return seconds / n_new
    return json.loads(path.read_text())["seconds_per_image"] if path.is_file() else float("nan")


def _safe(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9-_.+]`` replaced by ``_`` (a folder name)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default not given here comes from the profile (``paper.settings.GeneratorQuant``)."""
    ap = argparse.ArgumentParser(prog="python -m genqlib.paper.generator_quant", description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--teacher", default="mobilenet")
    ap.add_argument("--widths", nargs="+", default=None, help="W,A pairs, e.g. 4,8 4,4")
    ap.add_argument("--bits", default="2,4", help="downstream PTQ widths of the teacher")
    ap.add_argument("--method", default="genie_m", help="downstream PTQ method")
    ap.add_argument(
        "--iters", type=int, default=None, help="downstream iterations per block (default: the profile's)"
    )
    ap.add_argument("--n-per-class", type=int, default=None)
    ap.add_argument("--calib-per-class", type=int, default=None)
    ap.add_argument(
        "--finetune-iters",
        type=int,
        default=None,
        help="QuEST: optimizer steps per finetuning stage at most (the reference's schedule scaled down; "
        "AdaRound runs 2 iterations per block per step); default: the profile's",
    )
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison with the profile's pipeline, teacher, test split and reconstruction iterations."""
    from genqlib.datasets import eval_split
    from genqlib.generate import load_pipeline
    from genqlib.zoo import load_teacher

    args = parse_args(argv)
    p = get_profile(args.profile)
    widths = [_pair(w) for w in args.widths] if args.widths else None
    res = generator_quant(
        load_pipeline(p.generator),
        load_teacher(args.teacher),
        args.teacher,
        p,
        eval_split(p),
        Path(args.work_dir or p.work_dir),
        _pair(args.bits),
        args.method,
        args.iters or p.recon_iters,
        widths=widths,
        n_per_class=args.n_per_class,
        calib_per_class=args.calib_per_class,
        finetune_iters=args.finetune_iters,
    )
    res.pop("samples")
    res["command"] = shlex.join(
        ["python", "-m", "genqlib.paper.generator_quant", *(sys.argv[1:] if argv is None else argv)]
    )
    print(" ".join(COLUMNS))
    for row in res["rows"]:
        print(" ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


def _pair(text: str) -> tuple[int, ...]:
    """``"4,8"`` -> ``(4, 8)``."""
    return tuple(int(v) for v in text.split(","))


if __name__ == "__main__":
    main()
