"""Generator quality as an axis (issue #35 item 3): a ladder of generators, each judged by its own quality
metrics and by the downstream PTQ top-1 its images give at notebook 04's headline setting.

Per rung (``genqlib.paper.generator_rung``: a generator, its sampler steps, an optional plain-PTQ width of its
UNet): a pool of label-prompt images from the same prompts and seeds as every other rung, its quality metrics
on the headline teacher (class fidelity, BN distance, high-frequency share against real images', KID and
Frechet distance in the teacher's penultimate features, read at its ``head`` as the mini world's teachers
have it: ``genqlib.generator_quality.set_diagnostics``), and
PTQ top-1 over the seeds for GenQ filtered and GenQ unfiltered. Real data and BN inversion run once: they are
notebook 04's own rows (same runs, same cache keys under ``work_dir/ptq``), read from its cache when it ran.
The rung that is the profile's own generator at the profile's steps takes its images exactly as notebook 04
does (``calibration_set`` "genq" / "genq_unfiltered"), so its rows are notebook 04's too; the other rungs'
runs are filed under ``work_dir/ladder/ptq`` (not mixed into notebook 04's explorer). Pools resume, metrics
and runs are cached (``genqlib.infra.result_cache``), missing runs go to one-thread workers (``ptq_runs``).

``python -m genqlib.paper.generator_ladder --profile mini --out figures/bench/generator_ladder.json`` writes the
record (settings, per-rung metrics and top-1 mean/std/n per source, verdicts, machine, command) and its plot
(``genqlib.paper.ladder_verdicts``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genqlib.datasets import class_names, eval_split, real_split, run_classes
from genqlib.fashion_mnist import Split
from genqlib.generate import folder_id, generate, load_pipeline, pipeline_id
from genqlib.generator_quality import detail_summary, set_diagnostics
from genqlib.infra.machine import machine_record
from genqlib.infra.paths import relative_to_repo
from genqlib.infra.progress import tqdm
from genqlib.infra.result_cache import cached_json, digest, make_key
from genqlib.infra.workers import in_worker
from genqlib.metrics import evaluate, set_bn_distance
from genqlib.paper.calibration import bn_inversion_sets, calibration_set
from genqlib.paper.generator_rung import DEFAULT_RUNGS, Rung, locate, parse_rung
from genqlib.paper.profiles import FILTER_DROPS, REPO_ROOT, Profile, get_profile
from genqlib.paper.ptq_runs import PTQRun, PTQTask, profile_run, ptq_runs
from genqlib.paper.synthetic_pool import first_per_class, genq_view, label_pool, pool_per_class
from genqlib.quant import ENGINE
from genqlib.store import SyntheticSet
from genqlib.zoo import load_teacher
from genqlib.zoo.generators import generator_folder

# Notebook 04's ``method`` parameter: its headline rows (Table 2) are BRECQ's, and the ladder's real and
# BN-inversion rows are those rows.
NOTEBOOK_04_METHOD = "brecq"
# The committed record (mini; notebook 06 reads it) and the command that made it: mini's ablated teacher,
# mobilenet, collapses at W2A2 under every calibration source (notebook 04), so the ladder judges resnet.
RECORD = REPO_ROOT / "figures" / "bench" / "generator_ladder.json"
LADDER_COMMAND = "python -m genqlib.paper.generator_ladder --profile mini --teacher resnet"
BASELINES = ("real", "bn_inversion")
GENQ_SOURCES = ("genq", "genq_unfiltered")


@dataclass(frozen=True)
class LadderSetting:
    """Notebook 04's headline cell the ladder measures at: teacher, widths, method, calibration images,
    iterations per block, seeds, BN-inversion steps, the test split and the work folder."""

    profile: Profile
    teacher: str
    bits: tuple[int, int]
    method: str
    n_calib: int
    iters: int
    seeds: tuple[int, ...]
    bn_inversion_iters: int
    test: Split = field(repr=False)
    work_dir: Path
    first_last_bits: int | None = 8  # notebook 04's default (the BRECQ convention)

    def run(self, source: str, seed: int) -> PTQRun:
        """The PTQ run of ``source`` at ``seed``: notebook 04's ``run`` (same fields, so the same cache key)."""
        return profile_run(
            self.profile,
            self.teacher,
            self.bits,
            source,
            self.n_calib,
            self.method,
            self.first_last_bits,
            self.iters,
            seed,
        )

    def record(self) -> dict:
        """The setting as the record's ``settings``."""
        return {
            "profile": self.profile.name,
            "teacher": self.teacher,
            "w_bits": self.bits[0],
            "a_bits": self.bits[1],
            "method": self.method,
            "n_calib": self.n_calib,
            "iters": self.iters,
            "seeds": list(self.seeds),
            "first_last_bits": self.first_last_bits,
            "bn_inversion_iters": self.bn_inversion_iters,
            "n_eval": len(self.test),
            "drops": list(FILTER_DROPS),
            "guidance_scale": self.profile.guidance_scale,
            "gen_steps": self.profile.gen_steps,
            "gen_seed": self.profile.seed,
        }


def headline_teacher(p: Profile) -> str:
    """The teacher notebook 06 ablates (the data-sensitive one), else the first with a headline width."""
    return p.ablations.teacher or next(iter(dict(p.ptq.headline)), None) or p.teachers[0]


def ladder_setting(
    profile: str | Profile,
    teacher: str | None = None,
    seeds: Sequence[int] | None = None,
    n_calib: int | None = None,
    iters: int | None = None,
    test: Split | None = None,
    work_dir: str | Path | None = None,
) -> LadderSetting:
    """Notebook 04's headline setting of the profile (``ptq``: ``PTQGrid.resolved``, the teacher's headline
    width), each argument overriding one field."""
    p = get_profile(profile)
    teacher = teacher or headline_teacher(p)
    grid = p.ptq.resolved(p.calib_size, p.recon_iters, n_calib=n_calib, iters=iters, seeds=seeds)
    return LadderSetting(
        profile=p,
        teacher=teacher,
        bits=tuple(grid.widths(teacher)[0]),
        method=NOTEBOOK_04_METHOD,
        n_calib=grid.n_calib,
        iters=grid.iters,
        seeds=tuple(grid.seeds),
        bn_inversion_iters=p.bn_inversion.iters,
        test=test if test is not None else eval_split(p),
        work_dir=Path(work_dir or p.work_dir),
    )


# ---------------------------------------------------------------- one rung's images and metrics


def is_profile_generator(rung: Rung, folder: str | Path, p: Profile) -> bool:
    """Whether ``rung`` is the profile's own generator at its own steps, full precision: notebook 04's GenQ."""
    if rung.quant_bits is not None or rung.steps not in (None, p.gen_steps):
        return False
    own = generator_folder(p.generator)
    return Path(folder).resolve() == Path(own).resolve() if Path(own).exists() else str(folder) == str(own)


def quantized_pipeline(pipe, rung: Rung, p: Profile, work_dir: Path) -> tuple[object, dict]:
    """(``pipe`` with its UNet quantized by plain PTQ at ``rung.quant_bits``, facts): built exactly as the
    generator-quantization comparison builds its ``ptq`` rows (``genqlib.paper.generator_quant``: its settings,
    calibration trajectories at the rung's steps, and builder, cached under ``work_dir/gen_quant``)."""
    from genqlib.paper.generator_quant import _Builder, _calibration, _generators, gq_settings

    s = gq_settings(p, widths=[rung.quant_bits])
    ((_, _, cfg),) = list(_generators(s, ("ptq",), False, p.seed, rung.quant_bits))
    classes, names = list(run_classes(p)), class_names(p)
    calib = _calibration(pipe, p, classes, names, s)
    builder = _Builder(pipe, calib, [f"a photo of a {n}" for n in names], work_dir / "gen_quant")
    gpipe, built = builder.build(cfg)
    facts = {"config": cfg.record(), "calib_rows": len(calib[0]), "build_seconds": built["build_seconds"]}
    return gpipe, facts


def rung_pool(pipe, rung: Rung, p: Profile, per_class: int, work_dir: Path) -> SyntheticSet:
    """``per_class`` label-prompt images per class of the rung's generator, the profile's prompts, guidance and
    seeds at the rung's steps, in ``work_dir/ladder/pools/<rung>-<generator id>`` (resumed when there)."""
    steps = rung.steps or p.gen_steps
    gen_hash = digest(pipeline_id(pipe))[:8]  # a changed generator gets a new folder, never a mixed one
    name = f"{p.name}-{rung.tag}-{gen_hash}-g{p.guidance_scale}-s{steps}-seed{p.seed}"
    return generate(
        pipe,
        list(run_classes(p)),
        per_class,
        out=work_dir / "ladder" / "pools" / name,
        prompts="label",
        guidance_scale=p.guidance_scale,
        steps=steps,
        seed=p.seed,
        batch_size=p.gen_batch_size,
        class_names=class_names(p),
        progress=not in_worker(),
    )


def rung_metrics(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, s: LadderSetting) -> dict:
    """The rung's quality metrics on the headline teacher against as many class-balanced private-set (real)
    images, cached by the teacher, the images and the real images. Metrics that cannot be computed (BN
    distance of a model without BatchNorm) are None and named in ``not_measured``."""
    p = s.profile
    real = real_split(p, "train", n=len(images), seed=p.seed)
    bn_batch = min(100, len(images))  # Table 1b's batch of 100 (genqlib.metrics.set_bn_distance), or all
    key = make_key(
        {"what": "generator_ladder metrics", "bn_batch": bn_batch, "seed": p.seed},
        teacher=digest(model),
        images=digest(images, labels),
        real=digest(real.images, real.labels),
    )

    def compute() -> dict:
        gen = set_diagnostics(model, images, labels, real.images, real.labels, bn_batch=bn_batch)
        ref = detail_summary(real.images)
        bn = gen.get("bn_distance")
        bn_real = set_bn_distance(model, real.images, bn_batch, seed=p.seed)["mean"] if bn else None
        return {
            "n": len(images),
            "n_real": len(real.images),
            "class_fidelity": gen["class_fidelity"],
            "class_fidelity_per_class": gen["class_fidelity_per_class"],
            "classes": gen["classes"],
            "bn_distance": bn["mean"] if bn else None,
            "bn_distance_std": bn["std"] if bn else None,
            "bn_distance_real": bn_real,
            "hf_share": gen["hf_share"],
            "hf_share_real": ref["hf_share"],
            "hf_share_ratio": gen["hf_share"] / ref["hf_share"],
            "total_variation": gen["total_variation"],
            "total_variation_ratio": gen["total_variation"] / ref["total_variation"],
            "kid": gen["kid"],
            "kid_per_class": gen["kid_per_class"],
            "frechet": gen["frechet"],
            "not_measured": [] if bn else ["bn_distance: the teacher has no BatchNorm"],
        }

    return cached_json(s.work_dir / "ladder" / "metrics", f"{s.teacher}-n{len(images)}", key, compute)


@dataclass
class Measured:
    """A located rung: its record entry and its calibration images per GenQ source (cache folder, images)."""

    entry: dict
    calib: dict[str, tuple[Path, str, torch.Tensor]]


def measure_rung(rung: Rung, folder: str | Path, model: nn.Module, s: LadderSetting) -> Measured:
    """Pool, metrics and GenQ filtered/unfiltered calibration images of one rung."""
    p = s.profile
    k = len(run_classes(p))
    per_class = pool_per_class(s.n_calib, FILTER_DROPS, k)
    entry = {"rung": rung.spec, "tag": rung.tag, "status": "measured", "steps": rung.steps or p.gen_steps}
    entry["quant"] = None
    if is_profile_generator(rung, folder, p):
        pool = label_pool(p, per_class, s.work_dir)  # the shared set notebook 04's GenQ rows come from
        cache = s.work_dir / "ptq"
        sets = {src: calibration_set(model, src, s.n_calib, p, s.teacher, s.work_dir) for src in GENQ_SOURCES}
        calib = {src: (cache, src, c.images) for src, c in sets.items()}
        gen_id = (
            folder_id(folder) if Path(folder).is_dir() else str(folder)
        )  # a hub id where downloads are allowed
        entry |= {"generator": gen_id, "notebook_04_rows": True}
    else:
        pipe = load_pipeline(folder)
        if rung.quant_bits is not None:
            pipe, entry["quant"] = quantized_pipeline(
                pipe, rung, p.with_(gen_steps=entry["steps"]), s.work_dir
            )
        pool = rung_pool(pipe, rung, p, per_class, s.work_dir)
        cache = s.work_dir / "ladder" / "ptq"
        size, channels = p.image_size, p.image_channels
        filtered = genq_view(model, s.teacher, p, s.n_calib, FILTER_DROPS, pool=pool)
        unfiltered = pool.subset(first_per_class(pool.labels, s.n_calib))
        calib = {
            "genq": (cache, f"ladder-{rung.tag}-genq", filtered.images(size=size, channels=channels)),
            "genq_unfiltered": (
                cache,
                f"ladder-{rung.tag}-genq_unfiltered",
                unfiltered.images(size=size, channels=channels),
            ),
        }
        entry |= {"generator": pipeline_id(pipe), "notebook_04_rows": False}
    judged = pool.subset(first_per_class(pool.labels, per_class * k))
    images = judged.images(size=p.image_size, channels=p.image_channels)
    entry |= {"pool": relative_to_repo(pool.folder), "metrics": rung_metrics(model, images, judged.labels, s)}
    return Measured(entry, calib)


# ---------------------------------------------------------------- the ladder


def seed_cell(rows: Sequence[dict], source: str) -> dict:
    """One source's top-1 over its seeds: mean, sample std (0 for one seed), n, the values and seeds."""
    values = [r["top1"] for r in rows]
    return {
        "source": source,
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
        "seeds": [r["seed"] for r in rows],
        "from_cache": sum(bool(r.get("from_cache")) for r in rows),
    }


def _ptq(cells: dict[tuple, tuple[Path, str, torch.Tensor]], model, s: LadderSetting, jobs) -> dict:
    """Every cell (owner -> (cache folder, source, images)) at every seed; each cache folder's missing runs in
    one ``ptq_runs`` call (one-thread workers). Returns owner -> seed cell."""
    by_folder: dict[Path, list[tuple[tuple, PTQTask]]] = {}
    for owner, (cache, source, images) in cells.items():
        for seed in s.seeds:
            by_folder.setdefault(cache, []).append((owner, PTQTask(model, images, s.run(source, seed))))
    rows: dict[tuple, list[dict]] = {}
    for cache, tasks in by_folder.items():
        done = ptq_runs([t for _, t in tasks], s.test, cache, jobs=jobs, desc=f"ladder runs ({cache.name})")
        for (owner, _), row in zip(tasks, done, strict=True):
            rows.setdefault(owner, []).append(row)
    return {owner: seed_cell(rows[owner], cells[owner][1]) for owner in cells}


def run_ladder(rungs: Sequence[Rung | str], s: LadderSetting, jobs: int | None = None) -> dict:
    """The ladder's record: settings, FP top-1, real and BN-inversion cells, and per rung its metrics and GenQ
    filtered/unfiltered cells, or ``status`` "skipped" with the ``reason`` (also warned)."""
    rungs = [parse_rung(r) if isinstance(r, str) else r for r in rungs]
    tags = [r.tag for r in rungs]
    if len(set(tags)) != len(tags):
        raise ValueError(f"rungs repeat: {[r.spec for r in rungs]}")
    p = s.profile
    model = load_teacher(s.teacher)
    bn_inversion_sets({s.teacher: model}, s.n_calib, p, s.work_dir, iters=s.bn_inversion_iters, jobs=jobs)
    cells = {}
    for source in BASELINES:
        options = {"iters": s.bn_inversion_iters} if source == "bn_inversion" else {}
        images = calibration_set(model, source, s.n_calib, p, s.teacher, s.work_dir, **options).images
        cells[("baseline", source)] = (s.work_dir / "ptq", source, images)
    entries = []
    for rung in tqdm(rungs, desc="ladder rungs"):
        folder, why = locate(rung, p.allow_download)
        if why is not None:
            warnings.warn(f"generator ladder: rung {rung.spec} skipped: {why}", stacklevel=2)
            entries.append({"rung": rung.spec, "tag": rung.tag, "status": "skipped", "reason": why})
            continue
        measured = measure_rung(rung, folder, model, s)
        entries.append(measured.entry)
        cells.update({(rung.tag, src): c for src, c in measured.calib.items()})
    top1 = _ptq(cells, model, s, jobs)
    for entry in entries:
        if entry["status"] == "measured":
            entry["top1"] = {src: top1[entry["tag"], src] for src in GENQ_SOURCES}
    return {
        "settings": s.record(),
        "fp_top1": evaluate(model, s.test)["top1"],
        "baselines": {src: top1["baseline", src] for src in BASELINES},
        "rungs": entries,
        "engine": ENGINE,
        "threads_note": "PTQ rows made in one-thread workers repeat bit for bit on the same kind of CPU",
        "machine": machine_record(),
    }


# ---------------------------------------------------------------- the command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default not given comes from the profile (notebook 04's headline)."""
    ap = argparse.ArgumentParser(prog="python -m genqlib.paper.generator_ladder", description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--rungs", nargs="+", default=list(DEFAULT_RUNGS), help="NAME[@steps=N][@wWaA] ...")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's ptq seeds")
    ap.add_argument("--teacher", default=None, help="default: the profile's ablated (headline) teacher")
    ap.add_argument("--n-calib", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="reconstruction iterations per block")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default $GENQ_JOBS or CPUs)")
    ap.add_argument("--out", default=None, help="default: <profile figures>/bench/generator_ladder.json")
    return ap.parse_args(argv)


def rung_samples(record: dict, per_class: int = 1) -> dict[str, torch.Tensor]:
    """The first ``per_class`` images per class of each measured rung's pool (its folder under the work
    dir), by rung spec; a rung whose pool is gone is left out."""
    out = {}
    for r in record["rungs"]:
        folder = REPO_ROOT / r["pool"] if r.get("status") == "measured" else None  # absolute stays absolute
        if folder is not None and folder.is_dir():
            pool = SyntheticSet.open(folder)
            k = len(pool.labels.unique())
            out[r["rung"]] = pool.subset(first_per_class(pool.labels, per_class * k)).images()
    return out


def write_record(record: dict, out: Path, command: str) -> dict:
    """Add the verdicts (``genqlib.paper.ladder_verdicts``), the command, the plot and the rungs' sample
    images (PNG + SVG beside ``out``: ``<stem>`` and ``<stem>-samples``) to ``record``; write it to ``out``
    as JSON."""
    from genqlib.paper.ladder_verdicts import save_plot, save_samples, verdicts

    record["verdicts"] = verdicts(record)
    record["command"] = command
    record["figure"] = relative_to_repo(save_plot(record, out.parent, out.stem))
    samples = rung_samples(record)
    if samples:
        record["samples_figure"] = relative_to_repo(
            save_samples(record, samples, out.parent, f"{out.stem}-samples")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> dict:
    """Run the ladder, write its record (JSON) and plot, print its table and verdicts."""
    from genqlib.paper.ladder_verdicts import render

    args = parse_args(argv)
    rungs = [parse_rung(r) for r in args.rungs]
    s = ladder_setting(args.profile, args.teacher, args.seeds, args.n_calib, args.iters, None, args.work_dir)
    record = run_ladder(rungs, s, args.jobs)
    cmd = shlex.join(
        ["python", "-m", "genqlib.paper.generator_ladder", *(sys.argv[1:] if argv is None else argv)]
    )
    out = Path(args.out) if args.out else s.profile.figures_dir / "bench" / "generator_ladder.json"
    write_record(record, out, cmd)
    print(render(record))
    return record


if __name__ == "__main__":
    main()
